//! Assembles the pages of one snapshot or change set into the single update
//! the reconciler gets, resolving each namespace's owners from its page's
//! tenants — nothing of an update reaches the reconciler before its last page.

use std::collections::HashMap;

use mtp_proto::v1::{DesiredChanges, DesiredSnapshot, NamespaceConfig, TenantConfig, TenantOwners};

use crate::desired::{Changes, Snapshot};

/// Namespaces (upserts and deletes) one update may carry, at most: a bound
/// on what a partial update can hold in memory.
pub const MAX_NAMESPACES_PER_UPDATE: usize = 200_000;

/// The control plane broke the paging protocol: the update is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("namespace {namespace:?} names tenant {tenant:?}, which its page does not carry")]
    UnknownTenant { namespace: String, tenant: String },
    #[error("a {got} page arrived in the middle of a {expected}")]
    Interleaved {
        expected: &'static str,
        got: &'static str,
    },
    #[error(
        "a page of revision {got} (from {got_from}) arrived in the middle of the update to {expected} (from {expected_from})"
    )]
    RevisionChanged {
        expected_from: i64,
        expected: i64,
        got_from: i64,
        got: i64,
    },
    #[error("the update carries more than {MAX_NAMESPACES_PER_UPDATE} namespaces")]
    TooLarge,
}

/// An update whose last page has not arrived yet.
#[derive(Debug)]
enum Partial {
    Snapshot(Snapshot),
    Changes(Changes),
}

/// The partial update of one session (dropped with the session: a cut
/// mid-update discards it).
#[derive(Debug, Default)]
pub struct Pages {
    partial: Option<Partial>,
    /// Namespaces in the partial update so far.
    count: usize,
}

impl Pages {
    /// Folds in a snapshot page; the whole snapshot once this was its last.
    pub fn snapshot(&mut self, page: DesiredSnapshot) -> Result<Option<Snapshot>, PageError> {
        let result = self.snapshot_page(page);
        self.settle(result)
    }

    /// Folds in a change-set page; the whole change set once this was its last.
    pub fn changes(&mut self, page: DesiredChanges) -> Result<Option<Changes>, PageError> {
        let result = self.changes_page(page);
        self.settle(result)
    }

    /// Whether pages of an unfinished update are held.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// An error drops the update under way.
    fn settle<T>(&mut self, result: Result<Option<T>, PageError>) -> Result<Option<T>, PageError> {
        if result.is_err() {
            self.partial = None;
            self.count = 0;
        }
        result
    }

    fn snapshot_page(&mut self, page: DesiredSnapshot) -> Result<Option<Snapshot>, PageError> {
        let namespaces = resolve(page.namespaces, &page.tenants)?;
        self.grow(namespaces.len())?;
        let mut snapshot = match self.partial.take() {
            None => Snapshot {
                revision: page.revision,
                namespaces: Vec::new(),
            },
            Some(Partial::Snapshot(s)) if s.revision == page.revision => s,
            Some(Partial::Snapshot(s)) => {
                return Err(PageError::RevisionChanged {
                    expected_from: 0,
                    expected: s.revision,
                    got_from: 0,
                    got: page.revision,
                });
            }
            Some(Partial::Changes(_)) => {
                return Err(PageError::Interleaved {
                    expected: "change set",
                    got: "snapshot",
                });
            }
        };
        snapshot.namespaces.extend(namespaces);
        if page.more {
            self.partial = Some(Partial::Snapshot(snapshot));
            return Ok(None);
        }
        self.count = 0;
        Ok(Some(snapshot))
    }

    fn changes_page(&mut self, page: DesiredChanges) -> Result<Option<Changes>, PageError> {
        let upserts = resolve(page.upserts, &page.tenants)?;
        self.grow(upserts.len() + page.deletes.len())?;
        let mut changes = match self.partial.take() {
            None => Changes {
                from_revision: page.from_revision,
                revision: page.revision,
                upserts: Vec::new(),
                deletes: Vec::new(),
            },
            Some(Partial::Changes(c))
                if (c.from_revision, c.revision) == (page.from_revision, page.revision) =>
            {
                c
            }
            Some(Partial::Changes(c)) => {
                return Err(PageError::RevisionChanged {
                    expected_from: c.from_revision,
                    expected: c.revision,
                    got_from: page.from_revision,
                    got: page.revision,
                });
            }
            Some(Partial::Snapshot(_)) => {
                return Err(PageError::Interleaved {
                    expected: "snapshot",
                    got: "change set",
                });
            }
        };
        changes.upserts.extend(upserts);
        changes.deletes.extend(page.deletes);
        if page.more {
            self.partial = Some(Partial::Changes(changes));
            return Ok(None);
        }
        self.count = 0;
        Ok(Some(changes))
    }

    fn grow(&mut self, by: usize) -> Result<(), PageError> {
        self.count = self.count.saturating_add(by);
        if self.count > MAX_NAMESPACES_PER_UPDATE {
            return Err(PageError::TooLarge);
        }
        Ok(())
    }
}

/// Puts each namespace's owners in from its page's tenants (the wire carries
/// them once per tenant and page, not once per namespace).
fn resolve(
    namespaces: Vec<NamespaceConfig>,
    tenants: &[TenantConfig],
) -> Result<Vec<NamespaceConfig>, PageError> {
    let owners: HashMap<&str, &TenantOwners> = tenants
        .iter()
        .map(|t| {
            (
                t.tenant.as_str(),
                t.owners.as_ref().unwrap_or(&EMPTY_OWNERS),
            )
        })
        .collect();
    namespaces
        .into_iter()
        .map(|mut ns| match owners.get(ns.tenant.as_str()) {
            Some(o) => {
                ns.owners = Some((*o).clone());
                Ok(ns)
            }
            None => Err(PageError::UnknownTenant {
                namespace: ns.namespace,
                tenant: ns.tenant,
            }),
        })
        .collect()
}

static EMPTY_OWNERS: TenantOwners = TenantOwners {
    users: Vec::new(),
    groups: Vec::new(),
    service_accounts: Vec::new(),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, tenant: &str) -> NamespaceConfig {
        NamespaceConfig {
            namespace: name.into(),
            tenant: tenant.into(),
            revision: 3,
            ..Default::default()
        }
    }

    fn tenant(name: &str, user: &str) -> TenantConfig {
        TenantConfig {
            tenant: name.into(),
            owners: Some(TenantOwners {
                users: vec![user.into()],
                ..Default::default()
            }),
        }
    }

    fn page(
        revision: i64,
        names: &[(&str, &str)],
        tenants: &[TenantConfig],
        more: bool,
    ) -> DesiredSnapshot {
        DesiredSnapshot {
            revision,
            namespaces: names.iter().map(|(n, t)| ns(n, t)).collect(),
            tenants: tenants.to_vec(),
            more,
        }
    }

    fn users(ns: &NamespaceConfig) -> Vec<String> {
        ns.owners.clone().unwrap_or_default().users
    }

    #[test]
    fn snapshot_pages_assemble_with_owners_and_nothing_comes_out_before_the_last() {
        let mut pages = Pages::default();
        let first = page(
            7,
            &[("a-dev", "a"), ("b-dev", "b")],
            &[tenant("a", "alice"), tenant("b", "bob")],
            true,
        );
        assert_eq!(
            pages.snapshot(first),
            Ok(None),
            "a partial snapshot is held"
        );
        assert!(pages.in_progress());
        let last = page(7, &[("a-qa", "a")], &[tenant("a", "alice")], false);
        let snapshot = pages.snapshot(last).unwrap().expect("complete");
        assert_eq!(snapshot.revision, 7);
        let got: Vec<(&str, Vec<String>)> = snapshot
            .namespaces
            .iter()
            .map(|n| (n.namespace.as_str(), users(n)))
            .collect();
        assert_eq!(
            got,
            [
                ("a-dev", vec!["alice".to_string()]),
                ("b-dev", vec!["bob".to_string()]),
                ("a-qa", vec!["alice".to_string()]),
            ]
        );
        assert!(!pages.in_progress());
        // A single-page snapshot (and an empty one) comes out at once.
        assert_eq!(
            pages
                .snapshot(page(8, &[], &[], false))
                .unwrap()
                .map(|s| s.revision),
            Some(8)
        );
    }

    #[test]
    fn a_protocol_error_drops_the_update_under_way() {
        let mut pages = Pages::default();
        pages
            .snapshot(page(7, &[("a-dev", "a")], &[tenant("a", "alice")], true))
            .unwrap();
        // Its tenant is on another page: refused, and the partial one is gone.
        let err = pages.snapshot(page(7, &[("b-dev", "b")], &[tenant("a", "alice")], false));
        assert!(
            matches!(err, Err(PageError::UnknownTenant { .. })),
            "{err:?}"
        );
        assert!(!pages.in_progress());
        // A later last page does not complete the dropped snapshot.
        let alone = pages
            .snapshot(page(7, &[("c-dev", "c")], &[tenant("c", "carol")], false))
            .unwrap()
            .unwrap();
        assert_eq!(alone.namespaces.len(), 1, "nothing of the dropped pages");

        pages
            .snapshot(page(9, &[("a-dev", "a")], &[tenant("a", "alice")], true))
            .unwrap();
        let err = pages.snapshot(page(10, &[], &[], false));
        assert!(
            matches!(err, Err(PageError::RevisionChanged { .. })),
            "{err:?}"
        );
        pages
            .snapshot(page(9, &[("a-dev", "a")], &[tenant("a", "alice")], true))
            .unwrap();
        let err = pages.changes(DesiredChanges {
            from_revision: 9,
            revision: 10,
            ..Default::default()
        });
        assert!(matches!(err, Err(PageError::Interleaved { .. })), "{err:?}");
        assert!(!pages.in_progress());
    }

    #[test]
    fn change_pages_share_their_revisions_and_assemble() {
        let mut pages = Pages::default();
        let first = DesiredChanges {
            from_revision: 4,
            revision: 6,
            upserts: vec![ns("a-dev", "a")],
            deletes: vec!["old".into()],
            tenants: vec![tenant("a", "alice")],
            more: true,
        };
        assert_eq!(pages.changes(first), Ok(None));
        let other = DesiredChanges {
            from_revision: 5,
            revision: 6,
            more: false,
            ..Default::default()
        };
        assert!(matches!(
            pages.changes(other),
            Err(PageError::RevisionChanged { .. })
        ));
        pages
            .changes(DesiredChanges {
                from_revision: 4,
                revision: 6,
                deletes: vec!["x".into()],
                more: true,
                ..Default::default()
            })
            .unwrap();
        let done = pages
            .changes(DesiredChanges {
                from_revision: 4,
                revision: 6,
                upserts: vec![ns("b-dev", "b")],
                deletes: vec!["y".into()],
                tenants: vec![tenant("b", "bob")],
                more: false,
            })
            .unwrap()
            .unwrap();
        assert_eq!((done.from_revision, done.revision), (4, 6));
        assert_eq!(done.deletes, ["x", "y"]);
        assert_eq!(users(&done.upserts[0]), ["bob"]);
    }

    #[test]
    fn an_update_past_the_bound_is_refused() {
        let mut pages = Pages::default();
        let deletes: Vec<String> = (0..MAX_NAMESPACES_PER_UPDATE / 2)
            .map(|i| i.to_string())
            .collect();
        let page = |more| DesiredChanges {
            from_revision: 1,
            revision: 2,
            deletes: deletes.clone(),
            more,
            ..Default::default()
        };
        assert_eq!(pages.changes(page(true)), Ok(None));
        assert_eq!(pages.changes(page(true)), Ok(None), "exactly at the bound");
        assert_eq!(pages.changes(page(false)), Err(PageError::TooLarge));
        assert!(!pages.in_progress());
        assert!(
            pages.changes(page(false)).unwrap().is_some(),
            "starts afresh"
        );
    }
}
