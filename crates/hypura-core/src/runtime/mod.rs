//! The running model: options ([`options`]), the one preparation `plan` and a load share
//! ([`prepare`]), loading ([`load`]), decoding ([`model`]), generation with UTF-8 text
//! pieces ([`generate`], [`text`]), sampling ([`sample`]) and process figures
//! ([`proc_stats`]).

pub(crate) mod engine;
pub(crate) mod generate;
pub(crate) mod load;
pub(crate) mod model;
pub(crate) mod options;
pub(crate) mod prepare;
pub(crate) mod proc_stats;
pub(crate) mod repacked;
pub(crate) mod sample;
pub(crate) mod text;
