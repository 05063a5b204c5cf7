//! Internet checksum arithmetic (RFC 1071, RFC 1624).

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// New header checksum after one 16-bit word changed from `old` to `new` (RFC 1624 eqn. 3:
/// `HC' = ~(~HC + ~m + m')`), which equals a full recomputation, never yielding `0xFFFF` for
/// a header that sums to zero.
///
/// All three values are the big-endian words as read from the packet (`u16::from_be_bytes`).
#[inline(always)]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(sum)
}
