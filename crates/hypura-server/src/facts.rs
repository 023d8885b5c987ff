//! What the server tells about its model, gathered once before the engine's thread takes
//! the model: the file (name, size, time, identity), the GGUF's description (family,
//! parameters, quantization, a few hyperparameters), the chat template's source, and the
//! plan's and the load's figures.

use std::time::SystemTime;

use hypura_core::{LoadMode, Model};
use serde_json::{Map, Value};

/// The model's fixed facts.
#[derive(Debug)]
pub(crate) struct ModelFacts {
    /// The file's name (not its folder).
    pub file_name: String,
    pub file_bytes: u64,
    pub modified: Option<SystemTime>,
    /// A short identity of the file ([`Model::file_key`]).
    pub key: String,
    /// `general.architecture`.
    pub arch: String,
    pub parameters: u64,
    /// llama.cpp's `llama_ftype` (`general.file_type`), if the file says.
    pub file_type: Option<u32>,
    pub template_source: Option<String>,
    pub context_per_sequence: usize,
    pub sequences: usize,
    /// GGUF keys and values, for Ollama's `model_info`.
    pub info: Map<String, Value>,
    pub mode: LoadMode,
    pub streaming: bool,
    pub model_bytes: u64,
    pub resident_bytes: u64,
    pub gpu_resident_bytes: u64,
    pub streamed_bytes_per_token: u64,
    pub window_bytes: u64,
    pub expert_cache_bytes: u64,
    pub bound_tok_s: f64,
    pub load_s: f64,
    pub load_bytes_read: u64,
}

impl ModelFacts {
    pub fn of(model: &Model) -> Self {
        let path = model.options().model_path();
        let metadata = std::fs::metadata(path).ok();
        let plan = model.plan();
        let arch = model
            .metadata("general.architecture")
            .unwrap_or_else(|| plan.arch.clone());
        let mut keys: Vec<String> = [
            "general.architecture",
            "general.name",
            "general.basename",
            "general.size_label",
            "general.file_type",
            "general.quantization_version",
            "tokenizer.ggml.model",
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        for k in [
            "context_length",
            "embedding_length",
            "block_count",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
            "expert_count",
            "expert_used_count",
        ] {
            keys.push(format!("{arch}.{k}"));
        }
        let mut info = Map::new();
        for key in keys {
            if let Some(value) = model.metadata(&key) {
                info.insert(key, typed(value));
            }
        }
        info.insert(
            "general.parameter_count".into(),
            Value::from(model.parameter_count()),
        );
        let load = model.load_stats();
        Self {
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file_bytes: metadata.as_ref().map_or(plan.model_bytes, |m| m.len()),
            modified: metadata.and_then(|m| m.modified().ok()),
            key: model.file_key().to_string(),
            file_type: model
                .metadata("general.file_type")
                .and_then(|t| t.parse().ok()),
            arch,
            parameters: model.parameter_count(),
            template_source: model.chat_template().ok().map(|t| t.source().to_string()),
            context_per_sequence: model.context_per_sequence(),
            sequences: model.sequences(),
            info,
            mode: model.load_mode(),
            streaming: model.is_streaming(),
            model_bytes: plan.model_bytes,
            resident_bytes: plan.ram_resident_bytes,
            gpu_resident_bytes: plan.gpu_resident_bytes,
            streamed_bytes_per_token: plan.streamed_bytes_per_token,
            window_bytes: plan.window_bytes,
            expert_cache_bytes: plan.expert_cache_bytes,
            bound_tok_s: plan.bound_tok_s,
            load_s: load.load_s,
            load_bytes_read: load.load_bytes_read,
        }
    }

    /// The quantization as Ollama and llama.cpp's file names write it (`Q4_K_M`).
    pub fn quantization(&self) -> String {
        self.file_type
            .and_then(file_type_name)
            .map_or_else(|| "unknown".into(), str::to_string)
    }

    /// The parameter count as Ollama writes it (`135M`, `7.2B`).
    pub fn parameter_size(&self) -> String {
        human_number(self.parameters)
    }
}

/// A metadata value as JSON: a number when it reads as one.
fn typed(value: String) -> Value {
    if let Ok(n) = value.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = value.parse::<i64>() {
        return Value::from(n);
    }
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Value::from(x),
        _ => Value::String(value),
    }
}

/// llama.cpp's `llama_ftype` names (llama.h), as model files are named after them.
fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

/// A count as Ollama writes parameter sizes: `7B` or `7.2B`, `135M` or `134.52M`, `12K`.
fn human_number(n: u64) -> String {
    let x = n as f64;
    let (value, unit, decimals) = if n >= 1_000_000_000_000 {
        (x / 1e12, "T", 1)
    } else if n >= 1_000_000_000 {
        (x / 1e9, "B", 1)
    } else if n >= 1_000_000 {
        (x / 1e6, "M", 2)
    } else if n >= 1_000 {
        (x / 1e3, "K", 0)
    } else {
        return n.to_string();
    };
    if value.fract() == 0.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.decimals$}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::{file_type_name, human_number, typed};
    use serde_json::json;

    #[test]
    fn sizes_and_types_are_written_as_ollama_writes_them() {
        assert_eq!(human_number(134_515_008), "134.52M");
        assert_eq!(human_number(7_000_000_000), "7B");
        assert_eq!(human_number(8_030_261_248), "8.0B");
        assert_eq!(human_number(46_702_792_704), "46.7B");
        assert_eq!(human_number(12_345), "12K");
        assert_eq!(human_number(999), "999");
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
        assert_eq!(file_type_name(3), Some("Q4_1"));
        assert_eq!(file_type_name(4), None);
        assert_eq!(typed("8192".into()), json!(8192));
        assert_eq!(typed("0.5".into()), json!(0.5));
        assert_eq!(typed("llama".into()), json!("llama"));
    }
}
