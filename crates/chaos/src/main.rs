//! `lockstep-chaos`: the chaos runner, and the node binary it starts.
//!
//! ```text
//! lockstep-chaos run [--backend file|sled|rocksdb] [--seconds N] [--seed S] [--clients N]
//!                    [--keys N] [--faults kill-leader,pause,...] [--plant eventual-reads]
//!                    [--dir DIR]     (default: $CARGO_TARGET_DIR/chaos/BACKEND-seedS)
//!                    [--node-bin BIN] (default: this binary; any binary running `lockstep::cli`,
//!                                      e.g. `lockstep` built with `--features sled,rocksdb`)
//! lockstep-chaos node --config FILE      (the `lockstep` command line, every backend built in)
//! ```
//! `run` exits 0 when the run found no violation, 1 when it found one, 2 on bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use lockstep_chaos::faults::FaultKind;
use lockstep_chaos::{run, Backend, ChaosError, ChaosOptions, Plant};

const USAGE: &str = "usage: lockstep-chaos run [--backend file|sled|rocksdb] [--seconds N] [--seed S] [--clients N] [--keys N] [--faults K1,K2,..] [--plant eventual-reads|retries-without-sessions] [--dir DIR] [--node-bin BIN]
       lockstep-chaos node --config FILE";

fn options(args: &[String]) -> Result<ChaosOptions, ChaosError> {
    let bin = std::env::current_exe().map_err(ChaosError::io("finding this binary"))?;
    let mut opts = ChaosOptions::new(Backend::File, bin, PathBuf::new());
    let mut dir = None;
    let mut it = args.iter();
    let num = |v: Option<&String>, flag: &str| -> Result<u64, ChaosError> {
        v.and_then(|s| s.parse().ok())
            .ok_or_else(|| ChaosError::Usage(format!("{flag} needs a number")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => opts.backend = Backend::from_name(it.next().map_or("", String::as_str))?,
            "--seconds" => opts.seconds = num(it.next(), a)?,
            "--seed" => opts.seed = num(it.next(), a)?,
            "--clients" => opts.clients = num(it.next(), a)?.max(1),
            "--keys" => opts.keys = num(it.next(), a)?.max(1),
            "--plant" => opts.plant = Some(Plant::from_name(it.next().map_or("", String::as_str))?),
            "--dir" => dir = it.next().map(PathBuf::from),
            "--node-bin" => {
                opts.node_bin = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| ChaosError::Usage("--node-bin needs a path".into()))?
            }
            "--faults" => {
                let list = it.next().map_or("", String::as_str);
                opts.faults = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|n| {
                        FaultKind::from_name(n).ok_or_else(|| {
                            let names: Vec<&str> =
                                FaultKind::ALL.iter().map(|k| k.name()).collect();
                            ChaosError::Usage(format!(
                                "unknown fault {n:?}; one of: {}",
                                names.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(ChaosError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    opts.dir = dir.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
        PathBuf::from(target).join("chaos").join(format!(
            "{}-seed{}",
            opts.backend.name(),
            opts.seed
        ))
    });
    if opts.dir.exists() {
        std::fs::remove_dir_all(&opts.dir).map_err(ChaosError::io("clearing the run directory"))?;
    }
    Ok(opts)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("node") => {
            lockstep::cli::init_logging();
            lockstep::cli::run().await
        }
        Some("run") => {
            let opts = match options(&args[1..]) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            eprintln!(
                "chaos: {} backend, {} s, seed {}, {} clients over {} keys; run directory {}",
                opts.backend.name(),
                opts.seconds,
                opts.seed,
                opts.clients,
                opts.keys,
                opts.dir.display()
            );
            match run(&opts).await {
                Ok(report) => {
                    print!("{}", report.summary());
                    if report.violation.is_some() {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: the run could not be carried out: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
