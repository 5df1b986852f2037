//! Compiles the Swarm .proto files with protox (pure Rust, no system `protoc`) and generates
//! prost messages and tonic clients and servers into `OUT_DIR`, together with the encoded file
//! descriptor set that gRPC server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "swarm/common/v1/common.proto",
    "swarm/tasks/v1/tasks.proto",
    "swarm/agents/v1/agents.proto",
    "swarm/cache/v1/cache.proto",
    "swarm/metrics/v1/metrics.proto",
    "swarm/worker/v1/worker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=swarm");
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("swarm_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
