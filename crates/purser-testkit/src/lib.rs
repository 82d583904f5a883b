//! What the project's tests share. A dev-dependency only: nothing shipped links it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out; below it are the ports of well-known services.
const PORT_LOW: u32 = 10_000;
/// Where the kernel's ephemeral range starts when `/proc` does not say (Linux's default).
const EPHEMERAL_LOW_DEFAULT: u32 = 32_768;

/// A loopback address whose port is free now and lies below the kernel's ephemeral range.
///
/// A port from binding `127.0.0.1:0` comes from the ephemeral range, the same range the kernel
/// gives outgoing connections their local port from: between this call and the server's own
/// bind, a connection of a concurrent test could take it (`AddrInUse` at start). Below that
/// range only explicit binds compete, and within one process a counter keeps them apart.
pub fn free_addr() -> SocketAddr {
    let high = ephemeral_low();
    let span = high.saturating_sub(PORT_LOW).max(1);
    let next = next_counter();
    for _ in 0..span {
        let offset = next.fetch_add(1, Ordering::Relaxed) % span;
        let Ok(port) = u16::try_from(PORT_LOW + offset) else {
            continue;
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port in {PORT_LOW}..{high}");
}

/// Processes start at different places of the range (by process id), so that two test
/// binaries run side by side rarely try the same ports in the same order.
fn next_counter() -> &'static AtomicU32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7_919)))
}

fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&low: &u32| low > PORT_LOW + 1_000 && low <= u32::from(u16::MAX))
        .unwrap_or(EPHEMERAL_LOW_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_bindable_and_below_the_ephemeral_range() {
        let addrs: Vec<SocketAddr> = (0..64).map(|_| free_addr()).collect();
        let distinct: std::collections::BTreeSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), addrs.len(), "{addrs:?}");
        for addr in &addrs {
            assert!(u32::from(addr.port()) < ephemeral_low(), "{addr}");
            TcpListener::bind(addr).expect("a free address binds");
        }
    }
}
