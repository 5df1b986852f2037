//! The `swarm` binary run as processes, the way people and deployments run it: client
//! commands at a terminal, key administration, agents that are killed mid-task, the MCP bridge
//! across a gateway restart, and roles served as separate replicas. One test binary, so the stack is linked once.

mod agent_process;
mod client_commands;
mod common;
mod keys_command;
mod mcp_bridge;
mod replicas;
