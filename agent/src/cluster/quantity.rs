//! Kubernetes resource quantities (`500m`, `1Gi`, `1.5`, `2e3`, `128974848`) as the integers the
//! snapshot holds: millicores for CPU, bytes for memory, whole units for extended resources.
//!
//! The grammar is apimachinery's: a decimal number, then a binary suffix (`Ki` .. `Ei`), a
//! decimal suffix (`n`, `u`, `m`, none, `k`, `M` .. `E`) or a decimal exponent (`e3`, `E-2`).
//! Values are rounded up, as `Quantity.MilliValue()` / `Value()` do, so that a request never
//! shrinks in the conversion. Pure.

/// Why a quantity string cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity {0:?} is not a number with an optional suffix (like 500m, 1Gi, 1.5, 2e3)")]
    Malformed(String),
    #[error("quantity {0:?} is negative; requests, limits and capacities are never below 0")]
    Negative(String),
    #[error("quantity {0:?} has an unknown suffix; use m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent")]
    UnknownSuffix(String),
    #[error("quantity {0:?} is too large to count")]
    TooLarge(String),
}

/// A non-negative quantity as the exact fraction `numerator / denominator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    numerator: u128,
    denominator: u128,
}

impl Quantity {
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let malformed = || QuantityError::Malformed(text.to_owned());
        let trimmed = text.trim();
        let (negative, unsigned) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let number_end = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(malformed());
        }
        let too_large = || QuantityError::TooLarge(text.to_owned());
        let mut numerator: u128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            numerator = numerator
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(digit - b'0')))
                .ok_or_else(too_large)?;
        }
        let mut denominator = pow10(fraction.len()).ok_or_else(too_large)?;
        if negative && numerator != 0 {
            return Err(QuantityError::Negative(text.to_owned()));
        }
        let (multiply, divide) = match suffix_scale(suffix) {
            Suffix::Scale(multiply, divide) => (multiply, divide),
            Suffix::Unknown => return Err(QuantityError::UnknownSuffix(text.to_owned())),
            Suffix::BadExponent => return Err(malformed()),
            Suffix::HugeExponent => return Err(too_large()),
        };
        numerator = numerator.checked_mul(multiply).ok_or_else(too_large)?;
        denominator = denominator.checked_mul(divide).ok_or_else(too_large)?;
        Ok(Self {
            numerator,
            denominator,
        })
    }

    /// Thousandths, rounded up (CPU in millicores).
    pub fn millis(&self) -> u64 {
        ceil_div(self.numerator.saturating_mul(1000), self.denominator)
    }

    /// Whole units, rounded up (bytes, extended resources).
    pub fn units(&self) -> u64 {
        ceil_div(self.numerator, self.denominator)
    }
}

enum Suffix {
    /// Multiply by the first, divide by the second.
    Scale(u128, u128),
    Unknown,
    BadExponent,
    HugeExponent,
}

fn suffix_scale(suffix: &str) -> Suffix {
    let binary = |power: u32| Suffix::Scale(1u128 << power, 1);
    let decimal = |exponent: i64| match pow10(exponent.unsigned_abs() as usize) {
        Some(scale) if exponent >= 0 => Suffix::Scale(scale, 1),
        Some(scale) => Suffix::Scale(1, scale),
        None => Suffix::HugeExponent,
    };
    match suffix {
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => {
            let Some(exponent) = suffix.strip_prefix(['e', 'E']) else {
                return Suffix::Unknown;
            };
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Suffix::BadExponent;
            }
            match exponent.parse::<i64>() {
                Ok(exponent) => decimal(exponent),
                Err(_) => Suffix::HugeExponent,
            }
        }
    }
}

fn pow10(exponent: usize) -> Option<u128> {
    10u128.checked_pow(u32::try_from(exponent).ok()?)
}

/// `ceil(numerator / denominator)`, at most `u64::MAX`.
fn ceil_div(numerator: u128, denominator: u128) -> u64 {
    let quotient = numerator.div_ceil(denominator);
    u64::try_from(quotient).unwrap_or(u64::MAX)
}

/// CPU in millicores.
pub fn millicores(text: &str) -> Result<u64, QuantityError> {
    Quantity::parse(text).map(|q| q.millis())
}

/// Memory (and ephemeral storage) in bytes; extended resources in their unit.
pub fn units(text: &str) -> Result<u64, QuantityError> {
    Quantity::parse(text).map(|q| q.units())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        for (text, want) in [
            ("500m", 500),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("2", 2000),
            ("250m", 250),
            ("100000u", 100),
            ("1u", 1),
            ("1n", 1),
            ("0", 0),
            ("1e3", 1_000_000),
            ("1.5e-3", 2),
            ("+2", 2000),
            (" 3 ", 3000),
            (".5", 500),
            ("1.", 1000),
        ] {
            assert_eq!(millicores(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn memory_quantities() {
        for (text, want) in [
            ("1Gi", 1 << 30),
            ("512Mi", 512 << 20),
            ("1.5Gi", 3 << 29),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 128_974_848),
            ("1k", 1000),
            ("1Ki", 1024),
            ("2Ti", 2 << 40),
            ("1Ei", 1 << 60),
            ("8E", 8_000_000_000_000_000_000),
            ("1m", 1),
            ("1500m", 2),
            ("0.5Ki", 512),
        ] {
            assert_eq!(units(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_quantities_say_why() {
        assert_eq!(
            units("1Gb"),
            Err(QuantityError::UnknownSuffix("1Gb".into()))
        );
        assert_eq!(units("-1"), Err(QuantityError::Negative("-1".into())));
        assert_eq!(units("-0"), Ok(0));
        for text in ["", "abc", "Gi", "1.2.3", ".", "1e", "1e+", "1ex"] {
            assert!(
                matches!(units(text), Err(QuantityError::Malformed(_))),
                "{text}: {:?}",
                units(text)
            );
        }
        assert_eq!(units("1e400"), Err(QuantityError::TooLarge("1e400".into())));
        // Larger than u64 but countable: saturates.
        assert_eq!(units("100Ei"), Ok(u64::MAX));
        let message = units("1Gb")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("Ki, Mi, Gi"), "{message}");
    }
}
