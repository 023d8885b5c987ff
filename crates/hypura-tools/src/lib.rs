//! # hypura-tools
//!
//! Tooling around hypura, kept out of the library: synthetic GGUF models of real shapes
//! ([`synth`], written by the project's one GGUF writer, [`gguf`]), the stock-vs-hypura
//! benchmark in memory-capped cgroups ([`mod@bench`]), hypura's reader against a sequential
//! reader ([`read_rate`]), the disk-bandwidth probe the plan's bound uses ([`disk`]), and
//! the expert cache's trace replayed against the optimal policy ([`expert_sim`]).
#![warn(missing_docs)]

pub mod bench;
pub mod disk;
pub mod expert_sim;
pub mod gguf;
mod quant;
pub mod read_rate;
pub mod synth;
