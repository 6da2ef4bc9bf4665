//! The `lockstep` command-line tool; see [`lockstep::cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match lockstep::cli::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
