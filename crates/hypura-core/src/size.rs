//! Byte sizes as people write them: `512M`, `2G`, `1.5G`, `40%` (of a reference size).

use crate::error::{HypuraError, Result};

/// Parses `text` into bytes; a percentage is taken of `reference_bytes`.
pub fn parse_size(text: &str, reference_bytes: u64) -> Result<u64> {
    let bad = || HypuraError::InvalidSize(text.to_string());
    let t = text.trim();
    if let Some(pct) = t.strip_suffix('%') {
        let p: f64 = pct.trim().parse().map_err(|_| bad())?;
        if !(p.is_finite() && p > 0.0) {
            return Err(bad());
        }
        return Ok((reference_bytes as f64 * p / 100.0).round() as u64);
    }
    let upper = t.to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (number, multiplier) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 1u64 << 10),
        Some('M') => (&upper[..upper.len() - 1], 1 << 20),
        Some('G') => (&upper[..upper.len() - 1], 1 << 30),
        Some('T') => (&upper[..upper.len() - 1], 1 << 40),
        _ => (upper, 1),
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !(value.is_finite() && value > 0.0) {
        return Err(bad());
    }
    Ok((value * multiplier as f64).round() as u64)
}

/// Formats bytes for people (`1.50 GiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_percentages() {
        assert_eq!(parse_size("512M", 0).unwrap(), 512 << 20);
        assert_eq!(parse_size("2G", 0).unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB", 0).unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5g", 0).unwrap(), 3 << 29);
        assert_eq!(parse_size("4096", 0).unwrap(), 4096);
        assert_eq!(parse_size("40%", 1000).unwrap(), 400);
        assert_eq!(parse_size("10%", 98_000_000).unwrap(), 9_800_000);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "G", "-1G", "abc", "0", "0%", "nan%", "12X"] {
            assert!(parse_size(bad, 100).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
    }
}
