//! `cargo xtask docs`: the shell commands in README.md and docs/ are checked, and the cheap
//! ones run. Every line of a ```sh block is a command (a trailing `\` continues it, `#`
//! starts a comment); each is classified:
//!
//! - `cargo run -p P [--bin B]`, `cargo test -p P [--test T]`: the package and target exist
//!   (`cargo metadata`); `cargo xtask test` runs them all (examples, nextest).
//! - `cargo xtask SUB ...`: SUB exists and every flag is one SUB accepts; the cheap ones
//!   (one simulator seed, a planted bug, the local cluster walkthrough) run for real.
//! - `lockstep ...` / `target/debug/lockstep ...`: the real binary parses the arguments
//!   (`LOCKSTEP_CHECK_ARGS=1` makes it stop after parsing); `lockstep certs` runs for real
//!   in a scratch directory, and the getting-started walkthrough against a real cluster.
//! - `export LOCKSTEP_...`: checked by the facade's config tests (every variable in
//!   docs/configuration.md is applied to a config there).
//! - `curl`: needs a running node's metrics endpoint; exercised by the facade's
//!   observability test, not here.
//!
//! A line that fits none of these fails the check, so a new kind of command in the docs
//! gets a rule here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// One command from a ```sh block.
#[derive(Clone, Debug)]
pub struct DocCommand {
    /// The file, relative to the workspace root.
    pub file: String,
    /// Line of the command's first line.
    pub line: usize,
    /// The command, continuations joined, comment removed.
    pub text: String,
}

impl DocCommand {
    fn words(&self) -> Vec<String> {
        split_words(&self.text)
    }
}

/// Splits a command into words, honouring double quotes.
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Removes a `# comment` that is not inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Every command in the ```sh blocks of `files`.
pub fn extract(root: &Path, files: &[PathBuf]) -> Result<Vec<DocCommand>> {
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let name = f
            .strip_prefix(root)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        let mut in_sh = false;
        let mut pending: Option<DocCommand> = None;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_end();
            if t.starts_with("```") {
                in_sh = t == "```sh" || t == "```bash" || t == "```shell";
                continue;
            }
            if !in_sh {
                continue;
            }
            let body = strip_comment(t).trim_end();
            let (part, more) = match body.strip_suffix('\\') {
                Some(p) => (p.trim(), true),
                None => (body.trim(), false),
            };
            let cmd = match pending.take() {
                Some(mut p) => {
                    p.text.push(' ');
                    p.text.push_str(part);
                    p
                }
                None => DocCommand {
                    file: name.clone(),
                    line: i + 1,
                    text: part.to_string(),
                },
            };
            if more {
                pending = Some(cmd);
            } else if !cmd.text.is_empty() {
                out.push(cmd);
            }
        }
    }
    Ok(out)
}

/// The markdown files whose commands are checked: README.md and docs/ (recursively).
pub fn doc_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Flags each `cargo xtask` subcommand accepts (value-taking or not, it does not matter
/// here) and its positional words.
const XTASK: &[(&str, &[&str], &[&str])] = &[
    ("setup", &[], &[]),
    ("test", &[], &[]),
    ("docs", &[], &[]),
    (
        "sim",
        &[
            "--seeds",
            "--seed",
            "--bug",
            "--scenario",
            "--ops",
            "--nemesis-ms",
            "--nodes",
            "--voters",
            "--first",
            "--threads",
            "--production",
            "--persisted",
            "--kv",
            "--memory",
            "--file",
        ],
        &[],
    ),
    (
        "chaos",
        &[
            "--backend",
            "--seconds",
            "--seed",
            "--plant",
            "--faults",
            "--dir",
        ],
        &[],
    ),
    (
        "bench",
        &[
            "--quick",
            "--modes",
            "--backends",
            "--workloads",
            "--scale",
            "--limit-secs",
            "--out",
            "--metrics",
            "--reference",
            "--snapshot-state-mib",
            "--framework-clients",
            "--framework-ops",
            "--framework-ops-single",
            "--rounds",
        ],
        &["criterion"],
    ),
    ("cluster", &["--backend"], &["start", "stop", "status"]),
    ("fuzz", &["--seconds", "--target", "--seed"], &[]),
];

/// A workspace package and its targets as `(kind, name)`.
type Package = (String, Vec<(String, String)>);

/// What `cargo metadata` says about the workspace: package name to its targets.
fn workspace_targets(root: &Path) -> Result<Vec<Package>> {
    let out = Command::new(super::cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut pkgs = Vec::new();
    for p in v["packages"]
        .as_array()
        .context("metadata without packages")?
    {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let mut targets = Vec::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            let tname = t["name"].as_str().unwrap_or_default().to_string();
            for k in t["kind"].as_array().into_iter().flatten() {
                targets.push((k.as_str().unwrap_or_default().to_string(), tname.clone()));
            }
        }
        pkgs.push((name, targets));
    }
    Ok(pkgs)
}

fn flag_value<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    let i = words.iter().position(|w| w == name)?;
    words.get(i + 1).map(String::as_str)
}

/// Checks one `cargo run|test -p ...` command against the workspace.
fn check_cargo(words: &[String], pkgs: &[Package]) -> Result<()> {
    let p = flag_value(words, "-p").context("no `-p PACKAGE`")?;
    let (_, targets) = pkgs
        .iter()
        .find(|(n, _)| n == p)
        .with_context(|| format!("no workspace package {p:?}"))?;
    for (flag, kind) in [
        ("--bin", "bin"),
        ("--test", "test"),
        ("--example", "example"),
    ] {
        if let Some(t) = flag_value(words, flag) {
            if !targets.iter().any(|(k, n)| k == kind && n == t) {
                bail!("package {p} has no {kind} target {t:?}");
            }
        }
    }
    Ok(())
}

/// Checks one `cargo xtask ...` command's subcommand and flags.
fn check_xtask(words: &[String]) -> Result<()> {
    let sub = words.get(2).context("no subcommand")?;
    let (_, flags, positional) = XTASK
        .iter()
        .find(|(n, _, _)| n == sub)
        .with_context(|| format!("no xtask subcommand {sub:?}"))?;
    for w in &words[3..] {
        if w.starts_with("--") && !flags.contains(&w.as_str()) {
            bail!("`cargo xtask {sub}` has no flag {w}");
        }
    }
    if let Some(first) = words.get(3) {
        if !positional.is_empty()
            && !first.starts_with("--")
            && !positional.contains(&first.as_str())
        {
            bail!("`cargo xtask {sub}` takes {positional:?}, not {first:?}");
        }
    }
    Ok(())
}

/// The `lockstep` binary of this build.
fn lockstep_bin() -> PathBuf {
    super::target_dir().join("debug").join("lockstep")
}

/// Runs the `lockstep` binary on `args` in parse-only mode.
fn check_lockstep(args: &[String]) -> Result<()> {
    let out = Command::new(lockstep_bin())
        .args(args)
        .env("LOCKSTEP_CHECK_ARGS", "1")
        .output()
        .context("running lockstep")?;
    if !out.status.success() {
        bail!(
            "lockstep does not accept these arguments: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A command's words with the documented `target/` replaced by this build's target dir.
fn localised(words: &[String]) -> Vec<String> {
    let t = super::target_dir();
    words
        .iter()
        .map(|w| match w.strip_prefix("target/") {
            Some(rest) => t.join(rest).to_string_lossy().into_owned(),
            None => w.clone(),
        })
        .collect()
}

/// Runs `words` (a documented command) in `dir`; it must succeed.
fn run_in(dir: &Path, words: &[String]) -> Result<()> {
    let (program, args) = words.split_first().context("empty command")?;
    let program = if program == "cargo" {
        super::cargo()
    } else {
        program.clone()
    };
    eprintln!("    $ {}", words.join(" "));
    let status = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{}` failed with {status}", words.join(" "));
    }
    Ok(())
}

/// Whether a documented command is cheap enough to run for real here.
fn runs_for_real(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["cargo", "xtask", "sim", "--seed", _]
            | ["cargo", "xtask", "sim", "--production", "--seed", _]
            | ["cargo", "xtask", "sim", "--bug", _]
            | ["cargo", "xtask", "sim", "--scenario", _, "--seeds", _]
    ) || (w.len() >= 3 && w[0] == "cargo" && w[1] == "xtask" && w[2] == "cluster")
        || (w.len() >= 2
            && w[0].ends_with("lockstep")
            && (w[1] == "certs" || w[1] == "client")
            && w.iter().any(|a| a.contains("xtask-cluster")))
        || (w.len() >= 2 && w[0] == "lockstep" && w[1] == "certs")
}

/// Checks every documented command and runs the cheap ones.
pub fn check(root: &Path) -> Result<()> {
    let commands = extract(root, &doc_files(root)?)?;
    let pkgs = workspace_targets(root)?;
    let scratch = super::target_dir().join("xtask-docs");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let (mut checked, mut ran, mut elsewhere) = (0, 0, 0);
    let mut failures = Vec::new();
    for c in &commands {
        let words = c.words();
        let w0 = words.first().map(String::as_str).unwrap_or_default();
        let r = match (w0, words.get(1).map(String::as_str)) {
            ("cargo", Some("xtask")) => check_xtask(&words),
            ("cargo", Some("run" | "test")) => check_cargo(&words, &pkgs),
            (p, _) if p == "lockstep" || p.ends_with("/lockstep") => check_lockstep(&words[1..]),
            ("export", _) if words.get(1).is_some_and(|v| v.starts_with("LOCKSTEP_")) => {
                elsewhere += 1;
                continue;
            }
            ("curl", _) => {
                elsewhere += 1;
                continue;
            }
            _ => Err(anyhow::anyhow!(
                "no rule for this command (add one to xtask/src/docs.rs)"
            )),
        };
        let r = r.and_then(|()| {
            checked += 1;
            if !runs_for_real(&words) {
                return Ok(());
            }
            ran += 1;
            let local = localised(&words);
            if local[0] == "lockstep" {
                // In a directory of its own, as on a machine where it was never run.
                let dir = scratch.join(ran.to_string());
                std::fs::create_dir_all(&dir)?;
                let mut l = local.clone();
                l[0] = lockstep_bin().to_string_lossy().into_owned();
                run_in(&dir, &l)
            } else {
                run_in(root, &local)
            }
        });
        if let Err(e) = r {
            failures.push(format!("{}:{}: `{}`: {e:#}", c.file, c.line, c.text));
        }
    }
    eprintln!(
        "docs: {} commands: {checked} checked ({ran} of them run), {elsewhere} exercised by tests elsewhere",
        commands.len()
    );
    if !failures.is_empty() {
        bail!(
            "documented commands that do not work:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_joined_and_comments_removed() {
        let dir = std::env::temp_dir().join(format!("xtask-docs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.md");
        std::fs::write(
            &f,
            "text\n```sh\ncargo xtask sim --seed 42   # one seed\nlockstep certs --out c \\\n    --nodes 1,2\n# only a comment\nexport X=\"a # b\"\n```\n```rust\nnot = 1;\n```\n",
        )
        .unwrap();
        let c = extract(&dir, &[f]).unwrap();
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "cargo xtask sim --seed 42",
                "lockstep certs --out c --nodes 1,2",
                "export X=\"a # b\""
            ]
        );
        assert_eq!(c[1].line, 4);
        assert_eq!(split_words(&c[2].text), ["export", "X=a # b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_xtask_flags_and_subcommands_are_refused() {
        let w = |s: &str| split_words(s);
        assert!(check_xtask(&w("cargo xtask sim --seeds 5")).is_ok());
        assert!(check_xtask(&w("cargo xtask sim --sedes 5")).is_err());
        assert!(check_xtask(&w("cargo xtask simulate")).is_err());
        assert!(check_xtask(&w("cargo xtask cluster start")).is_ok());
        assert!(check_xtask(&w("cargo xtask cluster begin")).is_err());
    }
}
