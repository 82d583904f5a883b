//! Everything the command line spells as text: decimal amounts, durations, windows, RFC 3339
//! times, `key=value` lists, token usage and cluster members. Each parser returns a one-line
//! message on bad input, so that a typo exits 1 before anything reaches the cluster.

use purser_client::pb;
use purser_core::limits::AMOUNT_MAX;
use purser_core::time::{DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};

use crate::CliError;

pub type ParseResult<T> = Result<T, String>;

/// Names the flag a bad value came from: `--ttl: duration "5" is not like 90s, ...`.
pub trait Flagged<T> {
    fn flag(self, flag: &str) -> Result<T, CliError>;
}

impl<T> Flagged<T> for ParseResult<T> {
    fn flag(self, flag: &str) -> Result<T, CliError> {
        self.map_err(|e| CliError(format!("{flag}: {e}")))
    }
}

// ---- amounts -----------------------------------------------------------------------------

/// `1.25` at scale 6 is 1,250,000 minor units. Never rounds: more decimals than the scale
/// holds is an error, as are signs, exponents and anything above the largest amount the
/// state machine accepts.
pub fn amount(text: &str, scale: u32, currency: &str) -> ParseResult<u64> {
    let text = text.trim();
    let (int, frac) = amount_syntax(text)?;
    if frac.len() > scale as usize {
        return Err(format!(
            "amount {text:?} has {} decimals, but {currency} has {scale}",
            frac.len()
        ));
    }
    let too_large = || {
        format!(
            "amount {text:?} is too large: at most {} {currency}",
            format_amount(AMOUNT_MAX, scale)
        )
    };
    let unit = 10u128.checked_pow(scale).ok_or_else(too_large)?;
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let mut frac_minor: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| too_large())?
    };
    for _ in frac.len()..scale as usize {
        frac_minor *= 10;
    }
    let minor = int
        .checked_mul(unit)
        .and_then(|m| m.checked_add(frac_minor))
        .ok_or_else(too_large)?;
    if minor > u128::from(AMOUNT_MAX) {
        return Err(too_large());
    }
    Ok(minor as u64)
}

/// The integer and fraction digits of a non-negative decimal, before its scale is known (so
/// that a malformed amount is refused without asking the cluster anything).
pub fn amount_syntax(text: &str) -> ParseResult<(&str, &str)> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!(
            "amount {text:?} is negative: amounts are never negative"
        ));
    }
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(format!(
            "amount {text:?} is not a decimal number (like 12 or 1.25)"
        ));
    }
    Ok((int, frac.unwrap_or("")))
}

/// Minor units as a decimal in major units, without trailing zeros: 1,250,000 at scale 6 is
/// `1.25`, 3,000,000 is `3`.
pub fn format_amount(minor: u64, scale: u32) -> String {
    let Some(unit) = 10u128.checked_pow(scale) else {
        return minor.to_string();
    };
    let minor = u128::from(minor);
    let int = minor / unit;
    let frac = minor % unit;
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = scale as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// An amount as the API takes it (signed, so that the server's own range check applies).
pub fn to_wire(minor: u64) -> i64 {
    // `amount` caps every parsed value at AMOUNT_MAX, far below i64::MAX.
    i64::try_from(minor).unwrap_or(i64::MAX)
}

// ---- durations and windows ---------------------------------------------------------------

/// `90s`, `15m`, `1h`, `7d`, `2w`, `500ms`, or a sum like `1h30m`.
pub fn duration_ms(text: &str) -> ParseResult<u64> {
    let bad = || format!("duration {text:?} is not like 90s, 15m, 1h, 7d or 1h30m");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => SECOND_MS,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => DAY_MS,
            "w" => 7 * DAY_MS,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
    }
    Ok(total)
}

/// Exact and in the syntax [`duration_ms`] reads: 5,400,000 ms is `1h30m`, 86,400,000 is
/// `1d`, 46,325,138 is `12h52m5s138ms`.
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, name) in [
        (DAY_MS, "d"),
        (HOUR_MS, "h"),
        (MINUTE_MS, "m"),
        (SECOND_MS, "s"),
        (1, "ms"),
    ] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

pub fn period(text: &str) -> ParseResult<pb::Period> {
    Ok(match text {
        "hour" => pb::Period::Hour,
        "day" => pb::Period::Day,
        "week" => pb::Period::Week,
        "month" => pb::Period::Month,
        "year" => pb::Period::Year,
        _ => {
            return Err(format!(
                "period {text:?} is not one of hour, day, week, month, year"
            ))
        }
    })
}

pub fn period_name(period: i32) -> &'static str {
    match pb::Period::try_from(period) {
        Ok(pb::Period::Hour) => "hour",
        Ok(pb::Period::Day) => "day",
        Ok(pb::Period::Week) => "week",
        Ok(pb::Period::Month) => "month",
        Ok(pb::Period::Year) => "year",
        _ => "unknown",
    }
}

/// `lifetime`, `hour`, `day`, `week`, `month`, `sliding:DURATION` or `first-use:DURATION`.
pub fn window(text: &str) -> ParseResult<pb::Window> {
    use pb::window::Kind;
    let bad = || {
        format!(
            "window {text:?} is not one of lifetime, hour, day, week, month, \
             sliding:DURATION, first-use:DURATION"
        )
    };
    let kind = match text.split_once(':') {
        None if text == "lifetime" => Kind::Lifetime(pb::window::Lifetime {}),
        None if text == "year" => return Err(bad()),
        None => Kind::Calendar(period(text).map_err(|_| bad())? as i32),
        Some(("sliding", d)) => Kind::SlidingMs(duration_ms(d)?),
        Some(("first-use", d)) => Kind::FirstUseMs(duration_ms(d)?),
        Some(_) => return Err(bad()),
    };
    Ok(pb::Window { kind: Some(kind) })
}

/// The inverse of [`window`].
pub fn format_window(window: Option<&pb::Window>) -> String {
    use pb::window::Kind;
    match window.and_then(|w| w.kind.as_ref()) {
        Some(Kind::Lifetime(_)) => "lifetime".into(),
        Some(Kind::Calendar(p)) => period_name(*p).into(),
        Some(Kind::SlidingMs(ms)) => format!("sliding:{}", format_duration(*ms)),
        Some(Kind::FirstUseMs(ms)) => format!("first-use:{}", format_duration(*ms)),
        None => "unknown".into(),
    }
}

// ---- times -------------------------------------------------------------------------------

/// Times on the command line: the one grammar of `purser_core::time` (ms, a UTC date, RFC 3339).
pub use purser_core::time::{format_time, parse_time};

// ---- small structured values -------------------------------------------------------------

/// `key=value`; the value may be empty, the key may not.
pub fn key_value(text: &str, what: &str) -> ParseResult<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{what} {text:?} is not key=value")),
    }
}

pub fn tags(items: &[String]) -> ParseResult<Vec<pb::Tag>> {
    items
        .iter()
        .map(|t| key_value(t, "tag").map(|(key, value)| pb::Tag { key, value }))
        .collect()
}

/// `--attr k=v`: `user`, `model`, `provider` and `credential_type` are attribution fields,
/// every other key is a free tag.
pub fn attributes(items: &[String]) -> ParseResult<pb::Attributes> {
    let mut attrs = pb::Attributes::default();
    for item in items {
        let (key, value) = key_value(item, "attribute")?;
        let field = match key.as_str() {
            "user" => &mut attrs.user,
            "model" => &mut attrs.model,
            "provider" => &mut attrs.provider,
            "credential_type" => &mut attrs.credential_type,
            _ => {
                attrs.tags.push(pb::Tag { key, value });
                continue;
            }
        };
        if field.replace(value).is_some() {
            return Err(format!("attribute {key:?} is given twice"));
        }
    }
    Ok(attrs)
}

/// `model=M,input=N,output=N[,cached=N][,reasoning=N][,provider=P]`.
pub fn tokens(text: &str) -> ParseResult<pb::TokenUsage> {
    let mut usage = pb::TokenUsage::default();
    let (mut model, mut input, mut output) = (false, false, false);
    for item in text.split(',') {
        let (key, value) = key_value(item.trim(), "token field")?;
        let count = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("token count {key}={value:?} is not a whole number"))
        };
        match key.as_str() {
            "model" => (usage.model, model) = (value.clone(), true),
            "provider" => usage.provider = value.clone(),
            "input" => (usage.input, input) = (count()?, true),
            "output" => (usage.output, output) = (count()?, true),
            "cached" => usage.cached_input = count()?,
            "reasoning" => usage.reasoning = count()?,
            _ => {
                return Err(format!(
                    "token field {key:?} is not one of model, provider, input, output, cached, \
                     reasoning"
                ))
            }
        }
    }
    if !(model && input && output) {
        return Err("--tokens needs model=, input= and output=".into());
    }
    Ok(usage)
}

/// One `--currency CODE:SCALE` of a new root.
pub fn currency(text: &str) -> ParseResult<(String, u32)> {
    let bad = || format!("currency {text:?} is not CODE:SCALE (like usd:6)");
    let (code, scale) = text.split_once(':').ok_or_else(bad)?;
    let scale: u32 = scale.parse().map_err(|_| bad())?;
    if code.is_empty() {
        return Err(bad());
    }
    Ok((code.to_owned(), scale))
}

pub fn rollover(text: &str) -> ParseResult<pb::Rollover> {
    use pb::rollover::Kind;
    let bad = || format!("rollover {text:?} is not none, cap:N or percent:P");
    let kind = match text.split_once(':') {
        None if text == "none" => Kind::None(pb::rollover::NoCarry {}),
        Some(("cap", n)) => Kind::CapMultiple(n.parse().map_err(|_| bad())?),
        Some(("percent", p)) => Kind::Percent(p.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    Ok(pb::Rollover { kind: Some(kind) })
}

pub fn format_rollover(rollover: Option<&pb::Rollover>) -> String {
    use pb::rollover::Kind;
    match rollover.and_then(|r| r.kind.as_ref()) {
        None | Some(Kind::None(_)) => "none".into(),
        Some(Kind::CapMultiple(n)) => format!("cap:{n}"),
        Some(Kind::Percent(p)) => format!("percent:{p}"),
    }
}

pub fn grant_kind(text: &str) -> ParseResult<pb::GrantKind> {
    Ok(match text {
        "included" => pb::GrantKind::Included,
        "free" => pb::GrantKind::Free,
        "promotional" => pb::GrantKind::Promotional,
        "prepaid" => pb::GrantKind::Prepaid,
        "commitment" => pb::GrantKind::Commitment,
        "on_demand" | "on-demand" => pb::GrantKind::OnDemand,
        _ => {
            return Err(format!(
                "{text:?} is not one of included, free, promotional, prepaid, commitment, \
                 on_demand"
            ))
        }
    })
}

pub fn thresholds(text: &str) -> ParseResult<Vec<u32>> {
    text.split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("threshold {p:?} is not a whole percentage (like 50,75,100)"))
        })
        .collect()
}

/// A `NodeRef` by path. Only the shape is checked here; names are the server's business.
pub fn node_path(path: &str) -> ParseResult<String> {
    if path.is_empty() || path.split('/').any(str::is_empty) {
        return Err(format!(
            "node path {path:?} is not like acme/research/alice"
        ));
    }
    Ok(path.to_owned())
}

pub fn node_ref(path: &str) -> pb::NodeRef {
    pb::NodeRef {
        node: Some(pb::node_ref::Node::Path(path.to_owned())),
    }
}

pub fn node_id_ref(id: u64) -> pb::NodeRef {
    pb::NodeRef {
        node: Some(pb::node_ref::Node::Id(id)),
    }
}

// ---- cluster members ---------------------------------------------------------------------

/// A member as `cluster init` / `cluster add` take it: `ID=PEER` or `ID=PEER@CLIENT`. Without
/// a client address, the client port is the peer port minus 100 (the layout `purser dev` and
/// `scripts/cluster.sh` use).
pub fn member(text: &str) -> ParseResult<(u64, pb::MemberAddr)> {
    let bad = || format!("member {text:?} is not ID=HOST:PEERPORT or ID=HOST:PEERPORT@HOST:PORT");
    let (id, addrs) = text.split_once('=').ok_or_else(bad)?;
    let id: u64 = id.trim().parse().map_err(|_| bad())?;
    let (peer, client) = match addrs.split_once('@') {
        Some((peer, client)) => (peer.to_owned(), client.to_owned()),
        None => (addrs.to_owned(), derived_client_addr(addrs)?),
    };
    host_port(&peer).map_err(|_| bad())?;
    host_port(&client).map_err(|_| bad())?;
    Ok((
        id,
        pb::MemberAddr {
            peer_addr: peer,
            client_addr: client,
        },
    ))
}

pub fn derived_client_addr(peer: &str) -> ParseResult<String> {
    let (host, port) = host_port(peer)?;
    let client = port.checked_sub(100).filter(|p| *p > 0).ok_or_else(|| {
        format!("peer port {port} is below 101: give the client address as PEER@CLIENT")
    })?;
    Ok(format!("{host}:{client}"))
}

pub fn host_port(addr: &str) -> ParseResult<(&str, u16)> {
    let bad = || format!("address {addr:?} is not HOST:PORT");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    Ok((host, port.parse().map_err(|_| bad())?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_and_refuse_what_they_cannot_hold() {
        assert_eq!(amount("1.25", 6, "usd"), Ok(1_250_000));
        assert_eq!(amount("0", 6, "usd"), Ok(0));
        assert_eq!(amount("7", 0, "actions"), Ok(7));
        assert_eq!(amount("0.000001", 6, "usd"), Ok(1));
        assert_eq!(amount("9007199254.740991", 6, "usd"), Ok(AMOUNT_MAX));
        for bad in ["-1", "1.", ".5", "1e3", "1,5", "", "abc", "1.2.3", "+1"] {
            assert!(amount(bad, 6, "usd").is_err(), "{bad:?}");
        }
        assert!(amount("0.0000001", 6, "usd").unwrap_err().contains("6"));
        assert!(amount("1.5", 0, "actions").is_err());
        assert!(amount("9007199254.740992", 6, "usd")
            .unwrap_err()
            .contains("too large"));
        assert!(amount("99999999999999999999999999999999999999999", 6, "usd").is_err());
        assert!(amount("1", 40, "big").is_err());
        assert_eq!(format_amount(1_250_000, 6), "1.25");
        assert_eq!(format_amount(3_000_000, 6), "3");
        assert_eq!(format_amount(1, 6), "0.000001");
        assert_eq!(format_amount(0, 6), "0");
        assert_eq!(format_amount(42, 0), "42");
    }

    #[test]
    fn durations_and_windows() {
        assert_eq!(duration_ms("90s"), Ok(90_000));
        assert_eq!(duration_ms("15m"), Ok(900_000));
        assert_eq!(duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(duration_ms("7d"), Ok(7 * DAY_MS));
        assert_eq!(duration_ms("250ms"), Ok(250));
        for bad in ["", "5", "s", "1x", "-1s", "1.5h"] {
            assert!(duration_ms(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(DAY_MS), "1d");
        assert_eq!(format_duration(46_325_138), "12h52m5s138ms");
        for ms in [1, 999, 60_000, 90_061_001, 400 * DAY_MS] {
            assert_eq!(duration_ms(&format_duration(ms)), Ok(ms));
        }
        for w in [
            "lifetime",
            "hour",
            "day",
            "week",
            "month",
            "sliding:15m",
            "first-use:7d",
        ] {
            assert_eq!(format_window(Some(&window(w).unwrap())), w);
        }
        for bad in ["fortnight", "year", "sliding", "sliding:", "rolling:1h", ""] {
            assert!(window(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attributes_tokens_members() {
        let a = attributes(&["user=alice".into(), "model=gpt".into(), "team=ml".into()]).unwrap();
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.model.as_deref(), Some("gpt"));
        assert_eq!(
            a.tags,
            vec![pb::Tag {
                key: "team".into(),
                value: "ml".into()
            }]
        );
        assert!(attributes(&["user=a".into(), "user=b".into()]).is_err());
        assert!(attributes(&["novalue".into()]).is_err());
        let t = tokens("model=m,input=10,output=5,cached=2,provider=p").unwrap();
        assert_eq!(
            (t.input, t.output, t.cached_input, t.provider.as_str()),
            (10, 5, 2, "p")
        );
        assert!(tokens("model=m,input=10").is_err());
        assert!(tokens("model=m,input=x,output=1").is_err());
        let (id, m) = member("2=10.0.0.2:7701").unwrap();
        assert_eq!(
            (id, m.peer_addr.as_str(), m.client_addr.as_str()),
            (2, "10.0.0.2:7701", "10.0.0.2:7601")
        );
        let (_, m) = member("3=h:9000@h:8000").unwrap();
        assert_eq!(m.client_addr, "h:8000");
        assert!(member("x=h:1").is_err());
        assert!(member("1=h:50").is_err());
        assert!(member("1=nohost").is_err());
    }
}
