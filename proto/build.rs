//! Compiles the Swarm .proto files with protox (pure Rust, no system `protoc`) and generates
//! prost messages and tonic clients and servers into `OUT_DIR`, together with the encoded file
//! descriptor set that gRPC server reflection serves, and the paths of the methods marked
//! `idempotency_level = NO_SIDE_EFFECTS` (the calls a client may safely send again).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "swarm/common/v1/common.proto",
    "swarm/tasks/v1/tasks.proto",
    "swarm/agents/v1/agents.proto",
    "swarm/cache/v1/cache.proto",
    "swarm/metrics/v1/metrics.proto",
    "swarm/worker/v1/worker.proto",
];

/// Messages the gateway answers as JSON just as the services send them (with the `json`
/// feature): the metrics summary is defined once, here, for gRPC, REST and OpenAPI alike.
const SERVED_AS_JSON: &[&str] = &[
    ".swarm.metrics.v1.Summary",
    ".swarm.metrics.v1.RequestSummary",
    ".swarm.metrics.v1.RouteSummary",
    ".swarm.metrics.v1.Latency",
    ".swarm.metrics.v1.DatabaseSummary",
    ".swarm.metrics.v1.CacheSummary",
    ".swarm.metrics.v1.Memory",
    ".swarm.metrics.v1.Alert",
    ".swarm.metrics.v1.Reporter",
];

/// Timestamp fields of those messages, written as RFC 3339 text.
const JSON_TIMESTAMPS: &[&str] = &[
    ".swarm.metrics.v1.Alert.since",
    ".swarm.metrics.v1.Reporter.last_seen",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=swarm");
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("swarm_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    std::fs::write(
        out_dir.join("read_only_methods.rs"),
        read_only_methods(&descriptors),
    )?;
    let mut config = tonic_prost_build::configure().btree_map(".swarm.metrics.v1.Summary");
    for message in SERVED_AS_JSON {
        config = config.message_attribute(
            message,
            "#[cfg_attr(feature = \"json\", derive(serde::Serialize, utoipa::ToSchema))]",
        );
    }
    for field in JSON_TIMESTAMPS {
        config = config.field_attribute(
            field,
            "#[cfg_attr(feature = \"json\", serde(serialize_with = \"crate::json::timestamp\"), \
             schema(value_type = Option<String>, format = DateTime))]",
        );
    }
    config
        .message_attribute(
            ".swarm.metrics.v1.Summary",
            "#[cfg_attr(feature = \"json\", schema(as = MetricsSummary))]",
        )
        .compile_fds(descriptors)?;
    Ok(())
}

/// A sorted constant array of the `/package.Service/Method` paths of every method marked
/// `option idempotency_level = NO_SIDE_EFFECTS`.
fn read_only_methods(descriptors: &prost_types::FileDescriptorSet) -> String {
    use prost_types::method_options::IdempotencyLevel;
    let mut paths: Vec<String> = descriptors
        .file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service
                    .method
                    .iter()
                    .filter(|method| {
                        method.options.as_ref().is_some_and(|options| {
                            options.idempotency_level() == IdempotencyLevel::NoSideEffects
                        })
                    })
                    .map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
            })
        })
        .collect();
    paths.sort();
    format!(
        "/// The methods marked `NO_SIDE_EFFECTS`, sorted.\npub const READ_ONLY_METHODS: &[&str] = &{paths:?};\n"
    )
}
