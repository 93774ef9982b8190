//! `resource.Quantity` strings (`250m`, `1.5`, `512Mi`, `2G`, `1e3`) as numbers, for the
//! scheduler stand-in's requests-versus-allocatable arithmetic.

/// The value of a quantity in base units (cores, bytes); `None` for a malformed one.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .or_else(|| text.strip_suffix('P').map(|n| (n, 1e15)))
        .or_else(|| {
            text.strip_suffix('E')
                .filter(|n| !n.is_empty())
                .map(|n| (n, 1e18))
        })
        .unwrap_or((text, 1.0));
    let plain = number
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'));
    if number.is_empty() || !plain {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * factor)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn suffixes_scale_like_kubernetes() {
        assert_eq!(parse("250m"), Some(0.25));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse("2G"), Some(2e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1E"), Some(1e18));
        assert_eq!(parse("lots"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("-1"), None);
    }
}
