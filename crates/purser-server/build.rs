//! Compiles the internal Raft transport's proto without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = // Read at run time: `env!` would bake in where the build script was first compiled, and a
    // target directory shared between checkouts would then look for protos in the wrong one.
    std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("purser/internal/raft.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
