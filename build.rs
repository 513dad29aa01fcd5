//! Generates the inference node's gRPC code from `proto/` (needs `protoc`, which
//! `scripts/setup` installs from Debian's `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Audio fields as `Bytes`: decoded without another copy.
        .bytes(".scaigrid.node.v1")
        .compile_protos(&["proto/scaigrid/node/v1/node.proto"], &["proto"])?;
    Ok(())
}
