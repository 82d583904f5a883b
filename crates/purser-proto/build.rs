//! Compiles `proto/purser/v1/*.proto` with protox (pure Rust), so that building Purser needs
//! no system `protoc`.

use std::path::PathBuf;

const FILES: [&str; 8] = [
    "purser/v1/types.proto",
    "purser/v1/budget.proto",
    "purser/v1/admin.proto",
    "purser/v1/cluster.proto",
    "purser/v1/meter.proto",
    "purser/v1/report.proto",
    "purser/v1/webhook.proto",
    "purser/v1/token.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    for file in FILES {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let fds = protox::compile(FILES, [&proto_dir])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
