//! `cargo xtask`: project automation for lockstep.
//!
//! - `setup`: installs what a fresh machine lacks (system packages with apt-get, cargo-nextest).
//! - `test`: setup, format check, clippy, every test with nextest, doc tests, the facade's
//!   feature matrix, the examples as smoke tests, the simulator over many seeds (release
//!   build) and the checks that it catches broken protocol variants.
//! - `chaos [ARGS]`: a real-process chaos round with a linearizability check (see
//!   docs/testing.md); ARGS go to `lockstep-chaos run` (`--backend`, `--seconds`, `--seed`,
//!   `--clients`, `--keys`, `--faults`, `--plant`, `--dir`).
//! - `sim [ARGS]`: runs the deterministic simulator (release); `--seed N` replays one seed.
//! - `fuzz [--seconds N] [--target NAME] [--seed S]`: the fuzz targets of `crates/fuzz`
//!   (corpus replay, then N seconds of mutants per target); `test` runs 5 s per target.
//! - `bench [--quick] [ARGS]`: builds and runs the cluster benchmark (release); ARGS go to
//!   `cluster-bench` (see docs/performance.md). `bench criterion [ARGS]` runs the criterion
//!   micro-benchmarks instead.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

mod docs;

/// Debian packages the workspace needs to build and test.
/// (The core and the simulator need none; storage backends add theirs here.)
/// libclang-dev: RocksDB's bindings; fonts-dejavu-core: the labels of the benchmark charts.
const APT_PACKAGES: &[&str] = &["libclang-dev", "fonts-dejavu-core"];

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
        "cluster" => cluster(&rest),
        "chaos" => chaos(&rest),
        "fuzz" => fuzz(&rest),
        "docs" => docs_check(),
        _ => {
            eprintln!("usage: cargo xtask <setup|test|sim|chaos|fuzz|bench|cluster|docs> [args]\n\n  setup    install missing system packages and tools\n  test     run every check CI runs\n  docs     check every shell command in README.md and docs/, run the cheap ones\n  sim      run the simulator: --seeds N | --seed N | --bug NAME (see crates/lockstep/examples/sim.rs)\n  chaos    kill, pause, partition and reconfigure a real cluster under load, then check the\n           history: [--backend file|sled|rocksdb] [--seconds N] [--seed S] [--plant NAME]\n  fuzz     fuzz the decoders (WAL, recovery, codec, snapshot envelope, gRPC conversions):\n           [--seconds N per target, default 5] [--target NAME] [--seed S] (see docs/testing.md)\n  bench    run the cluster benchmark: [--quick] [cluster-bench args] | criterion [args]\n  cluster  start | stop | status a local 3-node cluster of real processes (ports 7001-7003)");
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
    // Production nodes (runtime, handler, the file store on a simulated disk), then the
    // scripted Figure 8 schedule and the membership profile.
    let seeds = TEST_SEEDS.to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    sim(&args(&["--seeds", &seeds, "--ops", "1000"]))?;
    sim(&args(&["--scenario", "figure8", "--seeds", "300"]))?;
    sim(&args(&[
        "--nodes",
        "5",
        "--nemesis-ms",
        "30",
        "--seeds",
        "300",
    ]))?;
    fuzz(&["--seconds".into(), "5".into()])?;
    docs_check()?;
    // In the release profile, as `bench` builds the cluster benchmark next: RocksDB's C++
    // is compiled once for both, not once more for a dev build of the benches.
    run(
        &cargo,
        &["build", "--release", "--benches", "-p", "lockstep-benches"],
    )?;
    bench(&["--quick".into()])?;
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
    &["--no-default-features", "--features", "file"],
    &["--no-default-features", "--features", "grpc"],
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
    run(&cargo(), &["run", "--quiet", "-p", "custom-state-machine"])?;
    // Both seed guides' examples, adapted only in imports (their tests run under nextest).
    for bin in ["octopii-guide", "d-engine-guide"] {
        run(
            &cargo(),
            &["run", "--quiet", "-p", "seed-guides", "--bin", bin],
        )?;
    }
    run(&cargo(), &["run", "--quiet", "-p", "quickstart"])
    // The sled-cluster and rocksdb-cluster examples run as 3-process smoke tests under
    // nextest (their tests/smoke.rs).
}

/// A backend of `cargo xtask cluster`: its package and binary, first port and storage name.
struct Backend {
    name: &'static str,
    package: &'static str,
    bin: &'static str,
    first_port: u16,
}

const BACKENDS: &[Backend] = &[
    Backend {
        name: "file",
        package: "lockstep",
        bin: "lockstep",
        first_port: 7001,
    },
    Backend {
        name: "sled",
        package: "sled-cluster",
        bin: "sled-cluster",
        first_port: 7101,
    },
    Backend {
        name: "rocksdb",
        package: "rocksdb-cluster",
        bin: "rocksdb-cluster",
        first_port: 7201,
    },
];

fn target_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
}

/// `cargo xtask cluster start|stop|status [--backend file|sled|rocksdb]`: a local 3-node
/// cluster of node processes on 127.0.0.1, data under target/xtask-cluster-BACKEND.
fn cluster(args: &[String]) -> Result<()> {
    let name = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .map_or("file", String::as_str);
    let backend = BACKENDS
        .iter()
        .find(|b| b.name == name)
        .with_context(|| format!("unknown backend {name:?}: file, sled or rocksdb"))?;
    let dir = target_dir().join(format!("xtask-cluster-{}", backend.name));
    let bin = target_dir().join("debug").join(backend.bin);
    let ports: Vec<u16> = (0..3).map(|i| backend.first_port + i).collect();
    match args.first().map(String::as_str) {
        Some("start") => {
            run(
                &cargo(),
                &[
                    "build",
                    "--quiet",
                    "-p",
                    backend.package,
                    "--bin",
                    backend.bin,
                ],
            )?;
            std::fs::create_dir_all(&dir)?;
            let peers: String = ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{} = \"127.0.0.1:{p}\"\n", i + 1))
                .collect();
            for (i, port) in ports.iter().enumerate() {
                let id = i + 1;
                let config = dir.join(format!("n{id}.toml"));
                let data = dir.join(format!("data{id}"));
                std::fs::write(
                    &config,
                    format!(
                        "node_id = {id}\ncluster_id = \"xtask-{}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nstorage = \"{}\"\n[peers]\n{peers}\n[bootstrap]\nvoters = [1, 2, 3]\n",
                        backend.name,
                        data.display(),
                        backend.name
                    ),
                )?;
                let log_path = dir.join(format!("n{id}.log"));
                let log = std::fs::File::create(&log_path)?;
                let child = Command::new(&bin)
                    .args(["node", "--config"])
                    .arg(&config)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?;
                std::fs::write(dir.join(format!("n{id}.pid")), child.id().to_string())?;
                eprintln!(
                    "node {id}: pid {}, 127.0.0.1:{port}, log {}",
                    child.id(),
                    log_path.display()
                );
            }
            eprintln!(
                "\ntry: {} client --config {} put hello world",
                bin.display(),
                dir.join("n1.toml").display()
            );
            Ok(())
        }
        Some("stop") => {
            for id in 1..=3 {
                let pid_file = dir.join(format!("n{id}.pid"));
                if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                    let _ = std::fs::remove_file(&pid_file);
                    eprintln!("node {id} stopped");
                }
            }
            Ok(())
        }
        Some("status") => {
            let status = Command::new(&bin)
                .args(["client", "--config"])
                .arg(dir.join("n1.toml"))
                .arg("status")
                .status()?;
            if !status.success() {
                bail!("status failed");
            }
            Ok(())
        }
        _ => bail!("usage: cargo xtask cluster start|stop|status [--backend file|sled|rocksdb]"),
    }
}

/// `cargo xtask chaos [ARGS]`: builds the chaos runner and runs one round; a violation
/// leaves the history, fault log and node logs in the run directory (printed).
fn chaos(args: &[String]) -> Result<()> {
    run(
        &cargo(),
        &[
            "build",
            "--quiet",
            "-p",
            "lockstep-chaos",
            "--bin",
            "lockstep-chaos",
        ],
    )?;
    let bin = target_dir().join("debug").join("lockstep-chaos");
    let mut a = vec!["run"];
    a.extend(args.iter().map(String::as_str));
    run(&bin.to_string_lossy(), &a)
}

/// `cargo xtask docs`: every shell command in README.md and docs/ is checked, the cheap
/// ones run (see `docs.rs`). The local cluster the walkthrough starts is always stopped.
fn docs_check() -> Result<()> {
    run(
        &cargo(),
        &["build", "--quiet", "-p", "lockstep", "--bin", "lockstep"],
    )?;
    let root = std::env::current_dir()?;
    let r = docs::check(&root);
    let _ = cluster(&["stop".into()]);
    r
}

/// `cargo xtask fuzz [--seconds N] [--target NAME] [--seed S]`: the fuzz targets of
/// `crates/fuzz`, each for N seconds after replaying its corpus (test profile, as nextest
/// builds it: no RocksDB, no extra profile).
fn fuzz(args: &[String]) -> Result<()> {
    let mut a = vec![
        "run",
        "--profile",
        "test",
        "--quiet",
        "-p",
        "lockstep-fuzz",
        "--bin",
        "lockstep-fuzz",
        "--",
    ];
    a.extend(args.iter().map(String::as_str));
    run(&cargo(), &a)
}

fn sim(args: &[String]) -> Result<()> {
    let mut a = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "lockstep",
        "--no-default-features",
        "--features",
        "testing,file",
        "--example",
        "sim",
        "--",
    ];
    a.extend(args.iter().map(String::as_str));
    run(&cargo(), &a)
}

fn bench(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("criterion") {
        let mut a = vec!["bench", "-p", "lockstep-benches"];
        if args.len() > 1 {
            a.push("--");
            a.extend(args[1..].iter().map(String::as_str));
        }
        return run(&cargo(), &a);
    }
    run(
        &cargo(),
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "lockstep-benches",
            "--bin",
            "cluster-bench",
        ],
    )?;
    let bin = target_dir().join("release").join("cluster-bench");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&bin.to_string_lossy(), &a)
}
