//! Generated protobuf messages, tonic clients and tonic servers for every Swarm service, and the
//! encoded file descriptor set that gRPC reflection serves. The `.proto` files under `proto/swarm`
//! are the source of truth.

#![allow(missing_docs)] // generated code carries the .proto comments, not rustdoc on every item

/// Declares the module of one protobuf package, `<name>::v1`, holding its generated code.
macro_rules! package {
    ($name:ident, $package:literal, $doc:literal) => {
        #[doc = $doc]
        pub mod $name {
            pub mod v1 {
                tonic::include_proto!($package);
            }
        }
    };
}

package!(common, "swarm.common.v1", "Shared messages (pagination).");
package!(tasks, "swarm.tasks.v1", "The task queue contract.");
package!(agents, "swarm.agents.v1", "The agent registry contract.");
package!(cache, "swarm.cache.v1", "The cache contract.");
package!(metrics, "swarm.metrics.v1", "The metrics contract.");
package!(
    worker,
    "swarm.worker.v1",
    "The worker contract the gateway serves."
);

impl cache::v1::Namespace {
    /// The services' own entries.
    pub fn internal() -> Option<Self> {
        Some(Self {
            owner: Some(cache::v1::namespace::Owner::Internal(
                cache::v1::Internal {},
            )),
        })
    }

    /// The application entries of `tenant` (empty: the ones admin callers share).
    pub fn tenant(tenant: impl Into<String>) -> Option<Self> {
        Some(Self {
            owner: Some(cache::v1::namespace::Owner::Tenant(tenant.into())),
        })
    }
}

#[cfg(feature = "json")]
pub mod json;

/// The encoded `FileDescriptorSet` of every Swarm .proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("swarm_descriptor");

/// Whether the gRPC method at `path` (`/package.Service/Method`) is marked
/// `idempotency_level = NO_SIDE_EFFECTS` in its .proto file: a call to it may be sent again, to
/// the same replica or another, without changing anything.
pub fn is_read_only(path: &str) -> bool {
    READ_ONLY_METHODS.binary_search(&path).is_ok()
}

include!(concat!(env!("OUT_DIR"), "/read_only_methods.rs"));
