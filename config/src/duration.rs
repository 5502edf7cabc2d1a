//! Durations as Istio accepts them: Go syntax (`1h2m3.5s`, `100ms`, `30us`).

use std::time::Duration;

/// Parse a Go duration string. Negative durations and overflow are errors.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let t = s.trim();
    if t.is_empty() || t.starts_with('-') {
        return Err(bad());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = t;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut value = int.checked_mul(nanos_per).ok_or_else(bad)?;
        let mut scale = nanos_per;
        for digit in frac.bytes() {
            scale /= 10;
            value += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(bad)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Istio's `ValidateDuration`: at least 1 ms and a whole number of milliseconds.
pub fn parse_istio(s: &str) -> Result<Duration, String> {
    let d = parse(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("duration {s:?} must be at least 1ms"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "duration {s:?} must be a whole number of milliseconds"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        let ok: &[(&str, Duration)] = &[
            ("5s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("100ms", Duration::from_millis(100)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("30us", Duration::from_micros(30)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            (".5s", Duration::from_millis(500)),
            ("15m", Duration::from_secs(900)),
        ];
        for (s, want) in ok {
            assert_eq!(parse(s), Ok(*want), "{s}");
        }
        for s in [
            "",
            "5",
            "s",
            "-1s",
            "1x",
            "1..2s",
            "1s2",
            "99999999999999999999999h",
            ".",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn istio_rules() {
        assert!(parse_istio("0s").is_err());
        assert!(parse_istio("500us").is_err());
        assert!(parse_istio("1.0005s").is_err());
        assert_eq!(parse_istio("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_istio("3s"), Ok(Duration::from_secs(3)));
    }
}
