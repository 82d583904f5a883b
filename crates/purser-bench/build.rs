//! Compiles `proto/etcd/rpc.proto` (the slice of etcd's v3 API the etcd peer uses) with protox
//! (pure Rust), so that building the benchmark needs no system `protoc`. Only a client is
//! generated.

use std::path::PathBuf;

const FILE: &str = "etcd/rpc.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", proto_dir.join(FILE).display());
    let fds = protox::compile([FILE], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
