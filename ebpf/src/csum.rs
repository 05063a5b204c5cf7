//! Internet checksum arithmetic (RFC 1071, RFC 1624).

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The IPv4 header checksum after the TTL dropped by one, from and to the native-order
/// 16-bit load of the checksum field.
///
/// The TTL is the high byte of the big-endian word (TTL, protocol), so the word fell by
/// 0x0100 and, by RFC 1624 eqn. 3, the checksum rises by 0x0100 in one's-complement
/// arithmetic. One's-complement sums commute with byte swapping, so the addition works on
/// the native load as is. A result of 0xFFFF (negative zero) becomes 0x0000, which is what a
/// full recomputation gives: a valid header never sums to zero, so its checksum is never
/// 0xFFFF (the same arithmetic as Linux's `ip_decrease_ttl`).
#[inline(always)]
pub fn ttl_decremented(check: u16) -> u16 {
    let sum = u32::from(check) + u32::from(0x0100u16.to_be());
    (sum + u32::from(sum >= 0xffff)) as u16
}
