//! Input validation shared by every command. Each check names what was wrong.

use crate::command::{CurrencySpec, LimitSpec};
use crate::error::{Error, Result};
use crate::state::{limits, Currency, LimitRule, Root, Thresholds};

/// `[a-z0-9][a-z0-9_.-]{0,62}`.
pub(crate) fn name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if !ok {
        return Err(Error::invalid(format!(
            "name {name:?} must match [a-z0-9][a-z0-9_.-]{{0,62}}"
        )));
    }
    Ok(())
}

/// Free text of bounded length without control characters (kinds, tags, models, roles).
pub(crate) fn text(what: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} {value:?} must be 1..={max} bytes without control characters"
        )));
    }
    Ok(())
}

pub(crate) fn tags(tags: &[(String, String)], max: usize) -> Result<()> {
    if tags.len() > max {
        return Err(Error::invalid(format!("at most {max} tags")));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        text("tag key", key, limits::TEXT_BYTES_MAX)?;
        if value.len() > limits::TAG_VALUE_BYTES_MAX || value.chars().any(char::is_control) {
            return Err(Error::invalid(format!("tag {key:?} has an invalid value")));
        }
        if tags[..i].iter().any(|(k, _)| k == key) {
            return Err(Error::invalid(format!("tag {key:?} is given twice")));
        }
    }
    Ok(())
}

/// A positive amount in minor units, at most `AMOUNT_MAX`.
pub(crate) fn amount(what: &str, value: i64) -> Result<u64> {
    if value < 0 {
        return Err(Error::invalid(format!("{what} {value} is negative")));
    }
    if value as u64 > limits::AMOUNT_MAX {
        return Err(Error::invalid(format!(
            "{what} {value} exceeds the maximum {}",
            limits::AMOUNT_MAX
        )));
    }
    Ok(value as u64)
}

pub(crate) fn positive_amount(what: &str, value: i64) -> Result<u64> {
    let amount = amount(what, value)?;
    if amount == 0 {
        return Err(Error::invalid(format!("{what} must be positive")));
    }
    Ok(amount)
}

pub(crate) fn thresholds(values: &[u8]) -> Result<Thresholds> {
    if values.is_empty() {
        return Ok(Thresholds::DEFAULT);
    }
    let mut out = values.to_vec();
    out.sort_unstable();
    out.dedup();
    if out.len() != values.len() || out.iter().any(|p| *p == 0 || *p > 100) {
        return Err(Error::invalid(
            "thresholds must be distinct percentages 1..=100",
        ));
    }
    Ok(Thresholds::from_percents(&out))
}

/// Turns a wire limit into a rule of `root`.
pub(crate) fn limit(root: &Root, spec: LimitSpec) -> Result<LimitRule> {
    let currency = root.currency(&spec.currency)?;
    crate::window::validate_window(spec.window)?;
    let amount = amount("limit amount", spec.amount)?;
    Ok(LimitRule {
        currency,
        amount,
        window: spec.window,
        mode: spec.mode,
        thresholds: thresholds(&spec.thresholds)?,
        on_exhausted: spec.on_exhausted,
    })
}

/// A root's currencies: 1..=8 distinct codes `[a-z][a-z0-9_]{0,15}` of scale 0..=18.
pub(crate) fn currencies(specs: Vec<CurrencySpec>) -> Result<Vec<Currency>> {
    if specs.is_empty() || specs.len() > limits::CURRENCIES_PER_ROOT_MAX {
        return Err(Error::invalid(format!(
            "a root declares 1..={} currencies",
            limits::CURRENCIES_PER_ROOT_MAX
        )));
    }
    let mut currencies: Vec<Currency> = Vec::new();
    for c in specs {
        let code = c.code.as_bytes();
        let ok = !code.is_empty()
            && code.len() <= 16
            && code[0].is_ascii_lowercase()
            && code
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !ok {
            return Err(Error::invalid(format!(
                "currency code {:?} must match [a-z][a-z0-9_]{{0,15}}",
                c.code
            )));
        }
        if c.scale > limits::CURRENCY_SCALE_MAX {
            return Err(Error::invalid(format!(
                "currency scale must be 0..={}",
                limits::CURRENCY_SCALE_MAX
            )));
        }
        if currencies.iter().any(|x| x.code == c.code) {
            return Err(Error::invalid(format!(
                "currency {:?} is declared twice",
                c.code
            )));
        }
        currencies.push(Currency {
            code: c.code,
            scale: c.scale,
            funded: c.funded,
        });
    }
    Ok(currencies)
}
