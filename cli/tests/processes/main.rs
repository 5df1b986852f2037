//! The `swarm` binary run as processes, the way people and deployments run it: client
//! commands at a terminal, key administration, agents that are killed mid-task, and roles
//! served as separate replicas. One test binary, so the stack is linked once.

mod agent_process;
mod client_commands;
mod common;
mod keys_command;
mod replicas;
