//! `cargo xtask`: project automation for lockstep.
//!
//! - `setup`: installs what a fresh machine lacks (system packages with apt-get, cargo-nextest).
//! - `test`: setup, format check, clippy, every test with nextest, doc tests, the facade's
//!   feature matrix, the examples as smoke tests, the simulator over many seeds (release
//!   build) and the checks that it catches broken protocol variants.
//! - `sim [ARGS]`: runs the deterministic simulator (release); `--seed N` replays one seed.
//! - `bench [ARGS]`: runs the criterion benchmarks.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Debian packages the workspace needs to build and test.
/// (The core and the simulator need none; storage backends add theirs here.)
const APT_PACKAGES: &[&str] = &[];

/// Seeds of 1,000 client operations each that `cargo xtask test` simulates.
const TEST_SEEDS: u64 = 1000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .map(|(c, r)| (c.as_str(), r.to_vec()))
        .unwrap_or(("help", Vec::new()));
    match cmd {
        "setup" => setup(),
        "test" => test(),
        "sim" => sim(&rest),
        "bench" => bench(&rest),
        _ => {
            eprintln!("usage: cargo xtask <setup|test|sim|bench> [args]\n\n  setup   install missing system packages and tools\n  test    run every check CI runs\n  sim     run the simulator: --seeds N | --seed N | --bug NAME (see crates/core/examples/sim.rs)\n  bench   run the criterion benchmarks");
            if cmd == "help" || cmd == "--help" {
                Ok(())
            } else {
                bail!("unknown command {cmd:?}")
            }
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let start = Instant::now();
    eprintln!("\n==> {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("could not start {program}"))?;
    eprintln!("    ({:.1} s)", start.elapsed().as_secs_f64());
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn setup() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !succeeds("dpkg", &["-s", p]))
        .collect();
    if !missing.is_empty() {
        eprintln!("installing system packages: {}", missing.join(" "));
        run("apt-get", &["update"])?;
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(missing);
        run("apt-get", &args)?;
    }
    if !succeeds(&cargo(), &["nextest", "--version"]) {
        run(&cargo(), &["install", "cargo-nextest", "--locked"])?;
    }
    Ok(())
}

fn test() -> Result<()> {
    let start = Instant::now();
    setup()?;
    let cargo = cargo();
    run(&cargo, &["fmt", "--all", "--", "--check"])?;
    run(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run(
        &cargo,
        &[
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ],
    )?;
    run(&cargo, &["test", "--doc", "--workspace", "--all-features"])?;
    feature_matrix()?;
    examples()?;
    let seeds = TEST_SEEDS.to_string();
    sim(&["--seeds".into(), seeds])?;
    run(&cargo, &["build", "--benches", "-p", "lockstep-benches"])?;
    eprintln!(
        "\nall checks passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Feature combinations of the facade that must build on their own, as a downstream crate
/// would select them.
const FEATURE_SETS: &[&[&str]] = &[
    &["--no-default-features"],
    &[],
    &["--no-default-features", "--features", "testing"],
];

/// Builds the facade alone with each feature combination that matters.
fn feature_matrix() -> Result<()> {
    for set in FEATURE_SETS {
        let mut a = vec!["check", "--quiet", "-p", "lockstep", "--lib"];
        a.extend_from_slice(set);
        run(&cargo(), &a)?;
    }
    Ok(())
}

/// Runs every example binary once, as a smoke test: each must finish and exit 0.
fn examples() -> Result<()> {
    run(&cargo(), &["run", "--quiet", "-p", "custom-state-machine"])
}

fn sim(args: &[String]) -> Result<()> {
    let mut a = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "lockstep-core",
        "--features",
        "testing",
        "--example",
        "sim",
        "--",
    ];
    a.extend(args.iter().map(String::as_str));
    run(&cargo(), &a)
}

fn bench(args: &[String]) -> Result<()> {
    let mut a = vec!["bench", "-p", "lockstep-benches"];
    if !args.is_empty() {
        a.push("--");
        a.extend(args.iter().map(String::as_str));
    }
    run(&cargo(), &a)
}
