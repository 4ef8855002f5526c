//! Semantic comparison of Kubernetes resource quantities.
//!
//! The API server stores quantities in canonical form (`0.5` becomes `500m`,
//! `1024Mi` becomes `1Gi`, `1e3` becomes `1k`), so comparing the desired and
//! the observed strings would see a difference that is not one. [`same`]
//! compares the values instead, exactly, following the grammar of
//! `k8s.io/apimachinery/pkg/api/resource`:
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
//! ```
//!
//! Like the API server, values are rounded up to a precision of `1n`.

/// A quantity's exact value as `mantissa × 10^exp`, normalised so that the
/// mantissa has no trailing decimal zero (zero is `(0, 0)`): two quantities
/// have the same value exactly when their `Value`s are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value {
    pub mantissa: i128,
    pub exp: i32,
}

/// Largest decimal exponent accepted (beyond it the value cannot be a resource amount).
const MAX_EXP: i32 = 60;
/// The API server's finest precision: `1n` = 10^-9.
const MIN_EXP: i32 = -9;

fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    s.split_at(end)
}

/// Parses `[+-]digits[.digits]` into `(mantissa, exp10)`.
fn parse_number(s: &str) -> Option<(i128, i32)> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut m: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        m = m.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let exp = -i32::try_from(frac.len()).ok()?;
    Some((if neg { -m } else { m }, exp))
}

/// Parses a quantity; `None` when it is not one (or is too large to compare exactly).
pub fn parse(s: &str) -> Option<Value> {
    let (number, suffix) = split_number(s);
    let (mut m, mut exp) = parse_number(number)?;
    let (binary_pow, decimal_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        _ => {
            let rest = suffix.strip_prefix(['e', 'E'])?;
            let (e, _) = parse_number(rest).filter(|&(_, frac)| frac == 0 && !rest.contains('.'))?;
            (0, i32::try_from(e).ok().filter(|e| e.abs() <= MAX_EXP)?)
        }
    };
    m = m.checked_mul(1i128.checked_shl(binary_pow)?)?;
    exp = exp.checked_add(decimal_exp)?;
    if m == 0 {
        return Some(Value { mantissa: 0, exp: 0 });
    }
    // Round away from zero to 1n, as the API server does.
    if exp < MIN_EXP {
        let div = 10i128.checked_pow((MIN_EXP - exp) as u32)?;
        let q = m / div;
        m = if m % div == 0 { q } else { q + m.signum() };
        exp = MIN_EXP;
    }
    while m % 10 == 0 {
        m /= 10;
        exp += 1;
    }
    if exp > MAX_EXP {
        return None;
    }
    Some(Value { mantissa: m, exp })
}

/// Whether `a` and `b` are the same quantity (equal strings, or equal parsed values).
pub fn same(a: &str, b: &str) -> bool {
    a == b || matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_are_the_same_quantity() {
        for (user, canonical) in [
            ("0.5", "500m"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1e3", "1k"),
            ("1E3", "1k"),
            ("1000m", "1"),
            ("2000", "2k"),
            ("0.1", "100m"),
            ("+1", "1"),
            (".5", "500m"),
            ("5.", "5"),
            ("128974848", "128974848"),
            ("129e6", "129M"),
            ("123Mi", "123Mi"),
            ("0", "0"),
            ("0m", "0"),
            ("0.0000000001", "1n"),
            ("1500u", "1500u"),
            ("1.5m", "1500u"),
        ] {
            assert!(same(user, canonical), "{user} vs {canonical}");
        }
    }

    #[test]
    fn different_quantities_differ() {
        for (a, b) in [("1", "2"), ("1Gi", "1G"), ("500m", "0.51"), ("1k", "1Ki"), ("1", "-1"), ("1E", "1Ei")] {
            assert!(!same(a, b), "{a} vs {b}");
        }
    }

    #[test]
    fn non_quantities_are_compared_as_strings() {
        assert!(parse("abc").is_none());
        assert!(parse("").is_none());
        assert!(parse(".").is_none());
        assert!(parse("1x").is_none());
        assert!(parse("1e").is_none());
        assert!(parse("1e1.5").is_none());
        assert!(parse("1..2").is_none());
        assert!(same("x", "x"));
        assert!(!same("x", "y"));
        // Too large to compare exactly: only equal strings match.
        let huge = "9".repeat(60);
        assert!(parse(&huge).is_none());
        assert!(same(&huge, &huge));
    }
}
