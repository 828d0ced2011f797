//! The hourly caps: `max_per_hour` for the whole instance, `max_per_hour_per_account` for each
//! departed account. Counted per clock hour (UTC), in this process: two instances sharing Redis
//! may together send up to twice the cap. A cap is a brake on a flood (a spam run against a
//! departed address, a loop that slipped through), not an exact quota.
//!
//! Pure: the caller passes the time.

use std::collections::HashMap;

use super::rules::Suppression;
use crate::address::Address;

#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Unix hours of the counts below.
    hour: u64,
    total: u32,
    per_account: HashMap<Address, u32>,
}

impl RateLimiter {
    /// Counts one reply from `account` at `unix_secs`, or says which cap it would exceed.
    pub fn try_acquire(
        &mut self,
        account: &Address,
        unix_secs: u64,
        max_total: u32,
        max_per_account: u32,
    ) -> Result<(), Suppression> {
        let hour = unix_secs / 3600;
        if hour != self.hour {
            self.hour = hour;
            self.total = 0;
            self.per_account.clear();
        }
        if self.total >= max_total {
            return Err(Suppression::SystemRateLimit);
        }
        let n = self.per_account.entry(account.clone()).or_insert(0);
        if *n >= max_per_account {
            return Err(Suppression::AccountRateLimit);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_account_cap_then_whole_system_cap_then_a_new_hour() {
        let a = Address::parse_strict("a@corp.example").unwrap();
        let b = Address::parse_strict("b@corp.example").unwrap();
        let c = Address::parse_strict("c@corp.example").unwrap();
        let mut r = RateLimiter::default();
        let t = 1_800_000_000u64 / 3600 * 3600;
        assert_eq!(r.try_acquire(&a, t, 3, 2), Ok(()));
        assert_eq!(r.try_acquire(&a, t + 1, 3, 2), Ok(()));
        assert_eq!(
            r.try_acquire(&a, t + 2, 3, 2),
            Err(Suppression::AccountRateLimit)
        );
        assert_eq!(r.try_acquire(&b, t + 3, 3, 2), Ok(()));
        assert_eq!(
            r.try_acquire(&c, t + 4, 3, 2),
            Err(Suppression::SystemRateLimit)
        );
        // The next clock hour starts from zero.
        assert_eq!(r.try_acquire(&a, t + 3600, 3, 2), Ok(()));
        assert_eq!(r.try_acquire(&c, t + 3601, 3, 2), Ok(()));
    }
}
