//! The agent registry's domain: agents and their rules, and the registry that derives status.

pub mod agent;
pub mod registry;

pub use agent::{Agent, AgentFilter, AgentUpdate, AgentView, Liveness, NewAgent};
pub use registry::AgentRegistry;
