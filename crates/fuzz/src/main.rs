//! `lockstep-fuzz`: runs the fuzz targets (`cargo xtask fuzz` builds and runs it).
//!
//! ```text
//! lockstep-fuzz [--seconds N] [--target NAME] [--seed S] [--iterations N] [--list]
//! ```
//!
//! Each target runs in a child process of its own (so its heap peak is its own, and an
//! allocation that aborts the process is caught): `--seconds` of mutants per target (5 by
//! default) after the corpus and the seeds, or exactly `--iterations` mutants. A failing
//! input is written to `<target dir>/fuzz-crashes/<target>/` with a line to replay it; an
//! abort is replayed with the same seed, saving each input before it runs, to keep the
//! input that caused it. Exits non-zero if any target failed.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use lockstep_fuzz::{fuzz, hex, input_name, target, targets, Budget, Options, ALLOC_BOUND};

struct Args {
    seconds: u64,
    iterations: Option<u64>,
    target: Option<String>,
    seed: u64,
    child: bool,
    save_inputs: Option<PathBuf>,
    replay: Vec<PathBuf>,
}

const USAGE: &str =
    "usage: lockstep-fuzz [--seconds N] [--target NAME] [--seed S] [--iterations N] [--list]
       lockstep-fuzz --target NAME --replay FILE...   (run saved inputs once)";

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seconds: 5,
        iterations: None,
        target: None,
        seed: 1,
        child: false,
        save_inputs: None,
        replay: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |s: String, name: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{name} needs a number, not {s:?}"))
        };
        match arg.as_str() {
            "--seconds" => a.seconds = num(value("--seconds")?, "--seconds")?,
            "--iterations" => a.iterations = Some(num(value("--iterations")?, "--iterations")?),
            "--seed" => a.seed = num(value("--seed")?, "--seed")?,
            "--target" => a.target = Some(value("--target")?),
            "--child" => a.child = true,
            "--save-inputs" => a.save_inputs = Some(PathBuf::from(value("--save-inputs")?)),
            "--replay" => {
                a.replay.extend(it.by_ref().map(PathBuf::from));
            }
            "--list" => {
                for t in targets() {
                    println!("{:<10} {}", t.name, t.about);
                }
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn crash_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("fuzz-crashes").join(name)
}

fn save_crash(name: &str, input: &[u8]) -> PathBuf {
    let dir = crash_dir(name);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(input_name("crash", input));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    path
}

/// Runs one target in this process; prints one `REPORT` line on stdout.
fn child(a: &Args, name: &str) -> ExitCode {
    let Some(t) = target(name) else {
        eprintln!("unknown target {name:?}");
        return ExitCode::from(2);
    };
    let budget = match a.iterations {
        Some(n) => Budget::Iterations(n),
        None => Budget::Time(Duration::from_secs(a.seconds)),
    };
    let r = fuzz(
        &t,
        &Options {
            seed: a.seed,
            budget,
            save_inputs: a.save_inputs.clone(),
        },
    );
    println!(
        "REPORT {} {} {} {} {:.3} {} {}",
        r.target,
        r.executions,
        r.corpus,
        r.seeds,
        r.elapsed.as_secs_f64(),
        r.peak_bytes,
        r.accepted
    );
    match r.failure {
        None => ExitCode::SUCCESS,
        Some(f) => {
            let path = save_crash(name, &f.input);
            eprintln!(
                "\n[{name}] {:?} on {} ({} bytes): {}\n  input: {}\n  saved: {}\n  replay: cargo run -p lockstep-fuzz -- --target {name} --replay {}\n  once fixed, add it to the corpus: cp {} crates/fuzz/corpus/{name}/",
                f.kind,
                f.origin,
                f.input.len(),
                f.message,
                hex(&f.input, 96),
                path.display(),
                path.display(),
                path.display()
            );
            ExitCode::from(1)
        }
    }
}

fn replay(name: &str, files: &[PathBuf]) -> ExitCode {
    let Some(t) = target(name) else {
        eprintln!("unknown target {name:?}");
        return ExitCode::from(2);
    };
    let mut failed = false;
    for f in files {
        let input = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                failed = true;
                continue;
            }
        };
        // A panic prints with the default hook here, with its backtrace if asked for.
        match std::panic::catch_unwind(|| (t.run)(&input)) {
            Ok(Ok(v)) => println!("{}: {v:?}", f.display()),
            Ok(Err(check)) => {
                println!("{}: check failed: {check}", f.display());
                failed = true;
            }
            Err(_) => {
                println!("{}: panicked", f.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

struct Line {
    name: &'static str,
    executions: u64,
    corpus: u64,
    seeds: u64,
    secs: f64,
    peak: u64,
    accepted: u64,
}

fn parse_report(stdout: &str) -> Option<Line> {
    let l = stdout.lines().find(|l| l.starts_with("REPORT "))?;
    let f: Vec<&str> = l.split_whitespace().collect();
    let name = targets()
        .into_iter()
        .find(|t| t.name == f.get(1).copied().unwrap_or(""))?
        .name;
    Some(Line {
        name,
        executions: f.get(2)?.parse().ok()?,
        corpus: f.get(3)?.parse().ok()?,
        seeds: f.get(4)?.parse().ok()?,
        secs: f.get(5)?.parse().ok()?,
        peak: f.get(6)?.parse().ok()?,
        accepted: f.get(7)?.parse().ok()?,
    })
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !a.replay.is_empty() {
        let Some(name) = a.target.as_deref() else {
            eprintln!("--replay needs --target");
            return ExitCode::from(2);
        };
        return replay(name, &a.replay);
    }
    if a.child {
        let Some(name) = a.target.as_deref() else {
            eprintln!("--child needs --target");
            return ExitCode::from(2);
        };
        return child(&a, name);
    }
    let selected: Vec<&'static str> = match &a.target {
        Some(n) => match target(n) {
            Some(t) => vec![t.name],
            None => {
                eprintln!(
                    "unknown target {n:?}; targets: {}",
                    targets()
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return ExitCode::from(2);
            }
        },
        None => targets().iter().map(|t| t.name).collect(),
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find this executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for name in selected {
        let mut cmd = Command::new(&exe);
        cmd.args(["--child", "--target", name, "--seed", &a.seed.to_string()]);
        match a.iterations {
            Some(n) => cmd.args(["--iterations", &n.to_string()]),
            None => cmd.args(["--seconds", &a.seconds.to_string()]),
        };
        eprintln!("fuzzing {name} (seed {})", a.seed);
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("cannot start {}: {e}", exe.display());
                return ExitCode::from(2);
            }
        };
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        match (out.status.code(), parse_report(&stdout)) {
            (Some(0), Some(l)) => lines.push(l),
            (Some(1), l) => {
                failed.push(name);
                lines.extend(l);
            }
            (code, _) => {
                // Killed (an allocation past the hard limit aborts): replay the same seed,
                // saving each input before it runs.
                eprintln!(
                    "[{name}] the run ended abnormally ({}): replaying seed {} to keep the input",
                    code.map_or_else(|| format!("{}", out.status), |c| format!("exit {c}")),
                    a.seed
                );
                failed.push(name);
                let dir = crash_dir(name);
                let _ = std::fs::create_dir_all(&dir);
                let last = dir.join("last-input");
                let mut again = Command::new(&exe);
                again.args(["--child", "--target", name, "--seed", &a.seed.to_string()]);
                again.arg("--save-inputs").arg(&last);
                match a.iterations {
                    Some(n) => again.args(["--iterations", &n.to_string()]),
                    None => again.args(["--seconds", &(a.seconds * 4).max(10).to_string()]),
                };
                match again.output() {
                    Ok(o) if o.status.code().is_none() || o.status.code() == Some(134) => {
                        let input = std::fs::read(&last).unwrap_or_default();
                        let path = save_crash(name, &input);
                        eprintln!(
                            "{}\n[{name}] the input that aborts the process ({} bytes): {}\n  saved: {}",
                            String::from_utf8_lossy(&o.stderr),
                            input.len(),
                            hex(&input, 96),
                            path.display()
                        );
                    }
                    Ok(o) => eprintln!(
                        "[{name}] the replay did not abort ({}): not reproduced\n{}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr)
                    ),
                    Err(e) => eprintln!("cannot start {}: {e}", exe.display()),
                }
            }
        }
    }
    eprintln!(
        "\n{:<10} {:>10} {:>8} {:>11} {:>9} {:>12}  bound",
        "target", "inputs", "corpus", "inputs/s", "accepted", "peak heap"
    );
    for l in &lines {
        eprintln!(
            "{:<10} {:>10} {:>8} {:>11.0} {:>9} {:>9.2} MiB  {} MiB{}",
            l.name,
            l.executions,
            l.corpus,
            l.executions as f64 / l.secs.max(1e-9),
            l.accepted,
            l.peak as f64 / (1 << 20) as f64,
            ALLOC_BOUND >> 20,
            if l.seeds == 0 { "  (no seeds)" } else { "" }
        );
    }
    if failed.is_empty() {
        eprintln!("no failures");
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED: {}", failed.join(", "));
        ExitCode::from(1)
    }
}
