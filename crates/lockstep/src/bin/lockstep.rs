//! The `lockstep` command-line tool; see [`lockstep::cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lockstep::cli::run().await
}
