//! Built-in services (docs/services.md): the same bytes out as the Python
//! handlers in src/zmqflow/handlers.py for the same bytes in.
//!
//! Contract: a [`Handler`] maps `(payload, headers)` to the output payload or
//! to an error text; the worker sends `Err(text)` as FAILED with exactly that
//! text. Handlers never panic on any input (a panic would still be caught by
//! the worker and reported as FAILED).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::protocol::Headers;

/// A service implementation.
pub type Handler = fn(&[u8], &Headers) -> Result<Vec<u8>, String>;

/// Names of the built-in services, in documentation order.
pub const BUILTIN: [&str; 4] = ["echo", "sleep", "sha256", "rollup"];

/// The handler for a built-in service name.
pub fn lookup(name: &str) -> Option<Handler> {
    match name {
        "echo" => Some(echo),
        "sleep" => Some(sleep),
        "sha256" => Some(sha256),
        "rollup" => Some(rollup),
        _ => None,
    }
}

/// `echo`: the payload unchanged.
pub fn echo(payload: &[u8], _headers: &Headers) -> Result<Vec<u8>, String> {
    Ok(payload.to_vec())
}

const SLEEP_ERROR: &str = "sleep: payload must be a whole number of milliseconds";

/// `sleep`: sleeps the payload's decimal milliseconds, returns the payload.
/// Parsing follows Python's `int(payload.strip())` on bytes: ASCII white
/// space around, an optional sign, digits with single `_` between them.
pub fn sleep(payload: &[u8], _headers: &Headers) -> Result<Vec<u8>, String> {
    let millis = parse_py_int(payload).ok_or_else(|| SLEEP_ERROR.to_owned())?;
    if millis < 0 {
        return Err(SLEEP_ERROR.to_owned());
    }
    let millis = u64::try_from(millis).unwrap_or(u64::MAX);
    std::thread::sleep(Duration::from_millis(millis));
    Ok(payload.to_vec())
}

/// Python's `int(bytes)` in base 10, saturating at the i128 range.
fn parse_py_int(raw: &[u8]) -> Option<i128> {
    // bytes.strip(): ASCII white space including \x0b, which Rust's
    // trim_ascii keeps.
    let space = |b: &u8| b" \t\n\r\x0b\x0c".contains(b);
    let start = raw.iter().position(|b| !space(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !space(b)).map_or(start, |i| i + 1);
    let text = &raw[start..end];
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits[0] == b'_' || digits[digits.len() - 1] == b'_' {
        return None;
    }
    let mut value: i128 = 0;
    let mut previous_underscore = false;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                value = value
                    .saturating_mul(10)
                    .saturating_add(i128::from(b - b'0'));
                previous_underscore = false;
            }
            b'_' if !previous_underscore => previous_underscore = true,
            _ => return None,
        }
    }
    Some(if negative { -value } else { value })
}

/// `sha256`: the digest as 64 lowercase ASCII hex characters.
pub fn sha256(payload: &[u8], _headers: &Headers) -> Result<Vec<u8>, String> {
    let digest = Sha256::digest(payload);
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(out, "{byte:02x}");
    }
    Ok(out.into_bytes())
}

const ROLLUP_HEADER: &str = "region,product,quantity,unit_price_cents";
const MAX_COUNT: u64 = 1 << 31;

#[derive(Default)]
struct Totals {
    orders: u128,
    quantity: u128,
    revenue_cents: u128,
}

/// Python's `str.isspace()` for one character (what `str.strip()` removes):
/// Unicode White_Space plus the separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

fn count(field: &str, line: usize, name: &str) -> Result<u128, String> {
    let text = py_strip(field);
    let bad = || format!("rollup: line {line}: {name} is not a non-negative integer");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 10 {
        return Err(bad());
    }
    let value: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().map_err(|_| bad())?
    };
    if value >= MAX_COUNT {
        return Err(bad());
    }
    Ok(u128::from(value))
}

/// `rollup`: sales CSV to per-region totals as canonical JSON
/// (docs/services.md#rollup), with the exact error texts documented there.
pub fn rollup(payload: &[u8], _headers: &Headers) -> Result<Vec<u8>, String> {
    let text =
        std::str::from_utf8(payload).map_err(|_| "rollup: payload is not UTF-8".to_owned())?;
    let mut lines = text.split('\n');
    if lines.next().unwrap_or("").trim_end_matches('\r') != ROLLUP_HEADER {
        return Err(format!("rollup: header must be {ROLLUP_HEADER}"));
    }
    let mut regions: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut products: HashMap<&str, u128> = HashMap::new();
    let (mut rows, mut total) = (0u128, 0u128);
    for (index, raw) in lines.enumerate() {
        let number = index + 2;
        let line = raw.trim_end_matches('\r');
        if py_strip(line).is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 4 {
            return Err(format!(
                "rollup: line {number}: expected 4 fields, got {}",
                fields.len()
            ));
        }
        let (region, product) = (py_strip(fields[0]), py_strip(fields[1]));
        if region.is_empty() {
            return Err(format!("rollup: line {number}: empty region"));
        }
        if product.is_empty() {
            return Err(format!("rollup: line {number}: empty product"));
        }
        let quantity = count(fields[2], number, "quantity")?;
        let price = count(fields[3], number, "unit_price_cents")?;
        let revenue = quantity * price;
        let totals = regions.entry(region).or_default();
        totals.orders += 1;
        totals.quantity += quantity;
        totals.revenue_cents += revenue;
        *products.entry(product).or_default() += revenue;
        rows += 1;
        total += revenue;
    }
    // Largest revenue; ties go to the smallest name in byte order.
    let top = products
        .iter()
        .min_by(|a, b| {
            b.1.cmp(a.1)
                .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
        })
        .map(|(name, _)| *name);

    let mut out = String::from("{\"regions\":{");
    for (i, (region, t)) in regions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, region);
        let _ = write!(
            out,
            ":{{\"orders\":{},\"quantity\":{},\"revenue_cents\":{}}}",
            t.orders, t.quantity, t.revenue_cents
        );
    }
    let _ = write!(out, "}},\"rows\":{rows},\"top_product\":");
    match top {
        Some(name) => json_str(&mut out, name),
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"total_revenue_cents\":{total}}}");
    Ok(out.into_bytes())
}

/// A JSON string as Python's `json.dumps(..., ensure_ascii=False)` writes
/// it: only `"`, `\` and control characters below U+0020 are escaped.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        lookup(name).unwrap()(payload, &Headers::new())
    }

    #[test]
    fn sleep_parses_like_python_int() {
        for ok in [
            &b"0"[..],
            b" 3\n",
            b"+1",
            b"-0",
            b"1_0",
            b"\x0b2\x0c",
            b"007",
        ] {
            assert!(run("sleep", ok).is_ok(), "{ok:?} should parse");
        }
        for bad in [
            &b""[..],
            b" ",
            b"\x1c3",
            b"\xa03",
            b"-_1",
            b"-1",
            b"1__0",
            b"_1",
            b"1_",
            b"1.5",
            b"0x1",
            b"+",
            b"1 2",
            b"\xd9\xa1",
        ] {
            assert_eq!(
                run("sleep", bad).unwrap_err(),
                SLEEP_ERROR,
                "{bad:?} should fail"
            );
        }
    }

    #[test]
    fn rollup_strips_like_python() {
        let csv = "region,product,quantity,unit_price_cents\r\r\n\u{1f}eu\u{a0},w,\u{3000}2 ,3\n \u{85}\n";
        let out = String::from_utf8(run("rollup", csv.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"regions":{"eu":{"orders":1,"quantity":2,"revenue_cents":6}},"rows":1,"top_product":"w","total_revenue_cents":6}"#
        );
    }

    #[test]
    fn rollup_escapes_like_python_json() {
        let csv = "region,product,quantity,unit_price_cents\na\"\\\u{1}\u{7f}\u{2028}b,p\tq,1,1\n";
        let out = String::from_utf8(run("rollup", csv.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\"regions\":{\"a\\\"\\\\\\u0001\u{7f}\u{2028}b\":{\"orders\":1,\"quantity\":1,\"revenue_cents\":1}},\"rows\":1,\"top_product\":\"p\\tq\",\"total_revenue_cents\":1}"
        );
    }

    #[test]
    fn rollup_number_limits() {
        let header = "region,product,quantity,unit_price_cents\n";
        let ok =
            format!("{header}eu,w,2147483647,0000000000002147483647\neu,w,2147483647,2147483647\n");
        let out = String::from_utf8(run("rollup", ok.as_bytes()).unwrap()).unwrap();
        let each = 2_147_483_647u128 * 2_147_483_647u128;
        assert!(
            out.contains(&format!("\"total_revenue_cents\":{}", 2 * each)),
            "{out}"
        );
        let too_big = format!("{header}eu,w,2147483648,1\n");
        assert_eq!(
            run("rollup", too_big.as_bytes()).unwrap_err(),
            "rollup: line 2: quantity is not a non-negative integer"
        );
        let empty = format!("{header}eu,w,,1\n");
        assert!(run("rollup", empty.as_bytes()).is_err());
    }

    #[test]
    fn rollup_top_product_ties_break_by_bytes() {
        let csv = "region,product,quantity,unit_price_cents\neu,b,1,5\neu,B,1,5\neu,a,0,9\n";
        let out = String::from_utf8(run("rollup", csv.as_bytes()).unwrap()).unwrap();
        assert!(out.contains("\"top_product\":\"B\""), "{out}");
    }

    #[test]
    fn unknown_service_has_no_handler() {
        assert!(lookup("nope").is_none());
        assert!(BUILTIN.iter().all(|name| lookup(name).is_some()));
    }
}
