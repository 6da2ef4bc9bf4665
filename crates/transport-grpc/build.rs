//! Generates the gRPC code of `proto/lockstep/*.proto` with a vendored `protoc`, so no
//! system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through this variable; it is set for this build script only.
    std::env::set_var("PROTOC", protoc);

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let peer = root.join("lockstep/peer.proto");
    let client = root.join("lockstep/client.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_protos(&[peer, client], &[root])?;
    Ok(())
}
