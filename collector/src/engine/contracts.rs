//! Renewable energy contracts entered over the API (`POST /api/v1/sites/{site}/contracts`,
//! docs/api.md): the same contracts as `[[sites]] renewable_contracts`, for the energy
//! engineer who records a certificate when it arrives rather than at the next change of
//! the configuration. They count in REF and market-based CUE exactly like the configured
//! ones. Kept in the engine's state file, like retirements. Still pure.

use super::kpi::RenewableContract;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Contracts one site may have entered over the API.
pub const MAX_PER_SITE: usize = 1_000;

/// A contract entered over the API, with the id it was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entered {
    /// Unique within the site, never reused.
    pub id: u64,
    /// The contract (`entered_ms` set).
    #[serde(flatten)]
    pub contract: RenewableContract,
}

/// One site's entered contracts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiteContracts {
    /// By id.
    pub entered: Arc<[Entered]>,
    /// The id the next one gets.
    next_id: u64,
}

impl SiteContracts {
    /// Adds a contract that neither `configured` nor an entered one already counts; its id.
    ///
    /// # Errors
    /// The contract it would count twice, or the site's list is full.
    pub fn enter(
        &mut self,
        configured: &[RenewableContract],
        mut contract: RenewableContract,
        now_ms: i64,
    ) -> Result<u64, String> {
        if let Some(k) = configured.iter().position(|c| c.counts_twice(&contract)) {
            return Err(format!(
                "evidence {:?} over the same time is in the configuration (renewable_contracts[{k}]): a certificate counts once",
                contract.evidence
            ));
        }
        if let Some(e) = self
            .entered
            .iter()
            .find(|e| e.contract.counts_twice(&contract))
        {
            return Err(format!(
                "evidence {:?} over the same time was entered as contract {}: a certificate counts once",
                contract.evidence, e.id
            ));
        }
        if self.entered.len() >= MAX_PER_SITE {
            return Err(format!(
                "the site has {MAX_PER_SITE} contracts entered: move those that stay into [[sites]] renewable_contracts"
            ));
        }
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        contract.entered_ms = Some(now_ms);
        let mut list = self.entered.to_vec();
        list.push(Entered { id, contract });
        self.entered = list.into();
        Ok(id)
    }

    /// Removes the contract with `id`; it, if there was one.
    pub fn withdraw(&mut self, id: u64) -> Option<Entered> {
        let at = self.entered.iter().position(|e| e.id == id)?;
        let mut list = self.entered.to_vec();
        let gone = list.remove(at);
        self.entered = list.into();
        Some(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(evidence: &str, from_ms: i64, to_ms: i64) -> RenewableContract {
        RenewableContract {
            from_ms,
            to_ms,
            kwh: 100.0,
            evidence: evidence.into(),
            kind: "green_certificate".into(),
            entered_ms: None,
        }
    }

    #[test]
    fn a_certificate_counts_once_and_ids_are_never_reused() {
        let configured = [contract("GEC-1", 0, 100)];
        let mut s = SiteContracts::default();
        // The configured certificate over an overlapping time is refused, naming it.
        let e = s.enter(&configured, contract("GEC-1", 50, 150), 7);
        assert!(e.is_err_and(|e| e.contains("renewable_contracts[0]")));
        // The same contract's next delivery period is another contract.
        assert_eq!(s.enter(&configured, contract("GEC-1", 100, 200), 7), Ok(1));
        assert_eq!(s.entered[0].contract.entered_ms, Some(7));
        let e = s.enter(&configured, contract("GEC-1", 150, 160), 8);
        assert!(e.is_err_and(|e| e.contains("contract 1")));
        assert_eq!(s.enter(&configured, contract("PPA-9", 0, 200), 9), Ok(2));
        assert_eq!(
            s.withdraw(1).map(|e| e.contract.evidence),
            Some("GEC-1".into())
        );
        assert_eq!(s.withdraw(1), None);
        assert_eq!(s.enter(&configured, contract("GEC-1", 100, 200), 10), Ok(3));
        let ids: Vec<u64> = s.entered.iter().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn a_site_holds_a_bounded_number() {
        let mut s = SiteContracts::default();
        for i in 0..MAX_PER_SITE as i64 {
            s.enter(&[], contract("GEC", i, i + 1), 0).expect("room");
        }
        let e = s.enter(&[], contract("GEC", -2, -1), 0);
        assert!(e.is_err_and(|e| e.contains("renewable_contracts")));
        assert_eq!(s.entered.len(), MAX_PER_SITE);
    }
}
