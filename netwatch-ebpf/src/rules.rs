//! Signature rules (opt-in mitigation): what a frame is (its destination, protocol, ports,
//! SYN, fragment and length) against the rules userspace set, each rule's exact counters, and
//! its action: count only (a dry run), drop, or pass up to a rate. Looked at only while a
//! rule exists.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray, ProgramArray, lpm_trie::Key},
    programs::XdpContext,
};
use netwatch_common::{
    FAMILY_IPV4, MAX_RULE_EXEMPTIONS, MAX_RULES, RULE_ACTION_DROP, RULE_ACTION_RATE_LIMIT,
    RULE_MATCH_DST_PORT, RULE_MATCH_FRAGMENT, RULE_MATCH_IN_USE, RULE_MATCH_LENGTH,
    RULE_MATCH_PROTOCOL, RULE_MATCH_SRC_PORT, RULE_MATCH_SYN, RULE_NONE, RULE_PROTOCOL_ICMP,
    RULE_PROTOCOL_OTHER, RULE_PROTOCOL_TCP, RULE_PROTOCOL_UDP, Rule, RuleBucket, RuleCounts,
    RuleSet,
};

use crate::{
    bans::AlignedKey,
    counters::{add, add_counter},
    frame::frame_len,
    parse::{Class, Parsed, Verdict, bytes, is_connection_attempt, parse},
};

/// Rule destinations, IPv4: a network (network byte order) to the set of rules whose
/// destination holds it, the rules of every shorter network that holds it included, so that
/// the longest match alone gives every rule that can apply. Written by userspace only.
#[map]
pub(crate) static RULES_V4: LpmTrie<[u8; 4], RuleSet> = LpmTrie::with_max_entries(1, 0);

/// Rule destinations, IPv6, as [`RULES_V4`].
#[map]
pub(crate) static RULES_V6: LpmTrie<[u8; 16], RuleSet> = LpmTrie::with_max_entries(1, 0);

/// Sources no rule applies to (a victim's own NTP or DNS servers, say), IPv4: looked up once
/// a rule matched a frame, which then passes uncounted by the rules.
#[map]
pub(crate) static RULE_EXEMPT_V4: LpmTrie<[u8; 4], u8> =
    LpmTrie::with_max_entries(MAX_RULE_EXEMPTIONS, 0);

/// Sources no rule applies to, IPv6, as [`RULE_EXEMPT_V4`].
#[map]
pub(crate) static RULE_EXEMPT_V6: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(MAX_RULE_EXEMPTIONS, 0);

/// The rules by index, [`MAX_RULES`] of them; a rule whose `matches` lacks
/// [`RULE_MATCH_IN_USE`] never matches.
#[map]
pub(crate) static RULES: Array<Rule> = Array::with_max_entries(MAX_RULES as u32, 0);

/// What each rule matched and dropped, per CPU, by index: exact, as every other counter.
#[map]
pub(crate) static RULE_COUNTS: PerCpuArray<RuleCounts> =
    PerCpuArray::with_max_entries(MAX_RULES as u32, 0);

/// Each rate-limited rule's window, shared by every CPU.
#[map]
pub(crate) static RULE_BUCKETS: Array<RuleBucket> = Array::with_max_entries(MAX_RULES as u32, 0);

/// What the rules (and the captures' filters) compare in a frame.
pub(crate) struct Signature {
    pub(crate) protocol: u8,
    pub(crate) syn: bool,
    pub(crate) fragment: bool,
    /// Whether the ports are known (a TCP or UDP first fragment with its header).
    pub(crate) has_ports: bool,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) ip_len: u32,
}

/// The rules' check, tail-called by the main program while rules exist: slot 0 holds
/// [`netwatch_rules`](crate::netwatch_rules), slot 1
/// [`netwatch_rules_sampled`](crate::netwatch_rules_sampled).
#[map]
pub(crate) static RULE_CHECK: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// The `RULE_PROTOCOL_*` of a parse's class.
#[inline(always)]
fn protocol_of(class: Class) -> u8 {
    match class {
        Class::TcpFirst | Class::TcpLater => RULE_PROTOCOL_TCP,
        Class::Udp => RULE_PROTOCOL_UDP,
        Class::Icmp => RULE_PROTOCOL_ICMP,
        Class::Other => RULE_PROTOCOL_OTHER,
    }
}

/// Whether any rule exists: [`Settings::rules`](netwatch_common::Settings::rules), read
/// alone.
#[inline(always)]
pub(crate) fn rules_in_force() -> bool {
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    unsafe { (&raw const crate::maps::SETTINGS.rules).read_volatile() != 0 }
}

/// Checks the frame against the rules that can apply to its destination, in the order of
/// their index; the first that matches counts it and decides. True: drop it. It parses the
/// frame itself (the counting program hands it nothing).
#[inline(always)]
pub(crate) fn check_rules(ctx: &XdpContext) -> bool {
    let Verdict::Source(parsed) = parse(ctx) else {
        return false;
    };
    let len = frame_len(ctx);
    let l3 = parsed.l3_offset;
    let ipv4 = parsed.key.family == FAMILY_IPV4;
    let set = if ipv4 {
        let Some(&[a, b, c, d]) = bytes::<4>(ctx, l3 + 16) else {
            return false;
        };
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(32, [a, b, c, d]),
        };
        RULES_V4.get(&lookup.key)
    } else {
        let Some(dst) = bytes::<16>(ctx, l3 + 24) else {
            return false;
        };
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(128, *dst),
        };
        RULES_V6.get(&lookup.key)
    };
    let Some(set) = set else {
        return false;
    };
    let signature = signature_of(ctx, &parsed, ipv4);
    let rules = set.rules;
    for index in rules {
        if index == RULE_NONE {
            break;
        }
        let index = u32::from(index);
        let Some(rule) = RULES.get(index) else {
            break;
        };
        if !matches(rule, &signature) {
            continue;
        }
        let [high, low, _] = parsed.key.words();
        if exempt([high, low], ipv4) {
            return false;
        }
        let Some(counts) = RULE_COUNTS.get_ptr_mut(index) else {
            return false;
        };
        // SAFETY: this CPU's counters of a per-CPU array.
        let counts = unsafe { &mut *counts };
        add_counter(&mut counts.matched, len);
        let drop = match rule.action {
            RULE_ACTION_DROP => true,
            RULE_ACTION_RATE_LIMIT => over_rate(rule, index),
            _ => false,
        };
        if drop {
            add_counter(&mut counts.dropped, len);
        }
        return drop;
    }
    false
}

/// What a rule compares in the frame `parsed` describes.
#[inline(always)]
pub(crate) fn signature_of(ctx: &XdpContext, parsed: &Parsed, ipv4: bool) -> Signature {
    let carries_ports =
        parsed.first_fragment && matches!(parsed.class, Class::TcpFirst | Class::Udp);
    // Plain values, never an Option: LLVM may compute a `None`'s unset ports from whatever a
    // register holds (a pointer, say), which the verifier refuses even when unused.
    let (has_ports, src_port, dst_port) = if carries_ports {
        transport_ports_or_zero(ctx, parsed.l4_offset)
    } else {
        (false, 0, 0)
    };
    Signature {
        protocol: protocol_of(parsed.class),
        syn: parsed.class == Class::TcpFirst && is_connection_attempt(ctx, parsed.l4_offset),
        fragment: parsed.fragment,
        has_ports,
        src_port,
        dst_port,
        ip_len: ip_len(ctx, parsed.l3_offset, ipv4),
    }
}

/// [`transport_ports`](crate::parse::transport_ports) as plain values: whether they are there, then the source and
/// destination ports (0 when they are not).
#[inline(always)]
fn transport_ports_or_zero(ctx: &XdpContext, l4_offset: usize) -> (bool, u16, u16) {
    match bytes::<4>(ctx, l4_offset) {
        Some(ports) => (
            true,
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        ),
        None => (false, 0, 0),
    }
}

/// Whether the source address of these words is one no rule applies to.
#[inline(always)]
fn exempt([high, low]: [u64; 2], ipv4: bool) -> bool {
    if ipv4 {
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(32, (high as u32).to_ne_bytes()),
        };
        RULE_EXEMPT_V4.get(&lookup.key).is_some()
    } else {
        let [a, b, c, d, e, f, g, h] = high.to_ne_bytes();
        let [i, j, k, l, m, n, o, p] = low.to_ne_bytes();
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(128, [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p]),
        };
        RULE_EXEMPT_V6.get(&lookup.key).is_some()
    }
}

/// The IP packet's length as its header says (IPv4 total length; IPv6 payload length and
/// the fixed header), not the frame's: Ethernet pads short frames.
#[inline(always)]
fn ip_len(ctx: &XdpContext, l3: usize, ipv4: bool) -> u32 {
    if ipv4 {
        bytes::<4>(ctx, l3).map_or(0, |header| {
            u32::from(u16::from_be_bytes([header[2], header[3]]))
        })
    } else {
        bytes::<6>(ctx, l3).map_or(0, |header| {
            40 + u32::from(u16::from_be_bytes([header[4], header[5]]))
        })
    }
}

/// Whether a frame matches every field `rule` names.
#[inline(always)]
pub(crate) fn matches(rule: &Rule, signature: &Signature) -> bool {
    let fields = rule.matches;
    if fields & RULE_MATCH_IN_USE == 0 {
        return false;
    }
    if fields & RULE_MATCH_PROTOCOL != 0 && rule.protocol != signature.protocol {
        return false;
    }
    if fields & (RULE_MATCH_SRC_PORT | RULE_MATCH_DST_PORT) != 0 {
        if !signature.has_ports {
            return false;
        }
        if fields & RULE_MATCH_SRC_PORT != 0 && rule.src_port != signature.src_port {
            return false;
        }
        if fields & RULE_MATCH_DST_PORT != 0 && rule.dst_port != signature.dst_port {
            return false;
        }
    }
    if fields & RULE_MATCH_SYN != 0 && !signature.syn {
        return false;
    }
    if fields & RULE_MATCH_FRAGMENT != 0 && !signature.fragment {
        return false;
    }
    if fields & RULE_MATCH_LENGTH != 0
        && (signature.ip_len < u32::from(rule.min_len)
            || signature.ip_len > u32::from(rule.max_len))
    {
        return false;
    }
    true
}

/// Whether a frame of a rate-limited rule is over its rate: each window of `rule.window_ns`
/// passes `rule.allowance` frames, all CPUs together. The count
/// is an atomic add; a new window's reset is two plain stores, which two CPUs may race at
/// its start (a window then passes a few frames more or fewer). Every frame is counted by
/// what was decided for it, so the counters stay exact whatever the race.
#[inline(always)]
fn over_rate(rule: &Rule, index: u32) -> bool {
    let Some(bucket) = RULE_BUCKETS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: an element of a shared array: the window with plain loads and stores (a race
    // costs the precision above, nothing else), the count with an atomic add.
    unsafe {
        let Some(window) = bpf_ktime_get_ns().checked_div(u64::from(rule.window_ns)) else {
            return false;
        };
        // Only forward: a CPU still on the window before must not reset the new one.
        if (&raw const (*bucket).window).read_volatile() < window {
            (&raw mut (*bucket).window).write_volatile(window);
            (&raw mut (*bucket).passed).write_volatile(0);
        }
        add(&raw mut (*bucket).passed, 1);
        (&raw const (*bucket).passed).read_volatile() > u64::from(rule.allowance)
    }
}
