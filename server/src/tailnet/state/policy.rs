//! The access policy: set after it compiles against the tailnet and passes its tests,
//! recompiled once per batch when what it depends on changed, and never widened by an
//! error (a policy that stops compiling cuts everyone off). It also decides which tags a
//! key or user may apply and which routes are approved automatically.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ipnet::IpNet;
use oxiscale_policy::{Policy, PolicyError, TagRequester, Topology};

use super::super::access::{Access, PolicyAccess};
use super::super::effects::{Change, Effects};
use super::super::model::{NodeId, UserId};
use super::validate::normalize_tags;
use super::{State, TailnetError, policy_inputs_hash};

impl State {
    /// The policy in force; `None` means allow-all.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// Set while the policy in force no longer compiles against the tailnet (every node is
    /// cut off until it is fixed): the reason, for the operator.
    pub fn policy_problem(&self) -> Option<&str> {
        self.policy_problem.as_deref()
    }

    /// The tailnet as the policy engine sees it. Node names are the MagicDNS labels; a tagged
    /// node has no user (its tags own it).
    pub fn policy_topology(&self) -> Topology {
        let now = time::OffsetDateTime::now_utc();
        Topology {
            users: self
                .users
                .values()
                .map(|u| oxiscale_policy::User {
                    id: u.id,
                    name: u.name.clone(),
                    email: u.email.clone(),
                    idp_groups: u.provider_groups.clone(),
                })
                .collect(),
            nodes: self
                .nodes
                .values()
                .map(|n| oxiscale_policy::Node {
                    id: n.id,
                    name: n.given_name.clone(),
                    user: if n.is_tagged() { None } else { n.user },
                    tags: n.tags.clone(),
                    ipv4: n.ipv4,
                    ipv6: n.ipv6,
                    routable_ips: n.hostinfo.routable_ips.clone(),
                    approved_routes: n.approved_routes.clone(),
                    stable_id: n.stable_id(),
                    attributes: {
                        let mut attributes = oxiscale_policy::node_attributes(
                            &n.hostinfo.os,
                            n.hostinfo.os_version(),
                            &n.hostinfo.ipn_version,
                        );
                        // Custom attributes that have not expired; never over `node:*`.
                        for (key, attr) in &n.custom_attributes {
                            if !attr.is_expired(now) {
                                attributes
                                    .entry(key.clone())
                                    .or_insert_with(|| attr.value.to_policy());
                            }
                        }
                        attributes
                    },
                })
                .collect(),
        }
    }

    /// Compiles `policy` against the live tailnet, its `tests` included, without putting it
    /// in force (for `policy check`).
    pub fn check_policy(
        &self,
        policy: &Policy,
    ) -> Result<(oxiscale_policy::Compiled, Topology), PolicyError> {
        let compile = self.compile_later(Arc::new(policy.clone()), true);
        let topology = compile.topology.clone();
        Ok((compile.run().into_result()?, topology))
    }

    /// What compiling `policy` against the tailnet as it is now takes, to run without the
    /// state (and its lock); [`State::put_compiled_policy`] puts the result in force.
    pub fn compile_later(&self, policy: Arc<Policy>, run_tests: bool) -> PolicyCompile {
        PolicyCompile {
            policy,
            run_tests,
            topology: self.policy_topology(),
            fingerprint: self.policy_fingerprint(),
            any_routes: self.any_routes(),
            server_url: self.settings.server_url.clone(),
        }
    }

    /// Puts `policy` in force (`None`: allow-all) once it compiled against the live tailnet
    /// and passed its `tests`; on error nothing changes. Routes it auto-approves are approved.
    /// Compiles under the caller's lock: the server compiles first
    /// ([`State::compile_later`]) and calls [`State::put_compiled_policy`].
    pub fn set_policy(
        &mut self,
        fx: &mut Effects,
        policy: Option<Arc<Policy>>,
    ) -> Result<(), PolicyError> {
        match policy {
            Some(policy) => {
                let compiled = self.compile_later(policy, true).run();
                self.put_compiled_policy(fx, compiled)
            }
            None => {
                let before = self.access.clone();
                self.policy = None;
                self.access = Access::AllowAll;
                self.compiled_for = None;
                self.policy_problem = None;
                self.apply_address_attrs(Some(fx));
                self.announce_access_change(fx, &before);
                Ok(())
            }
        }
    }

    /// Puts a policy compiled by [`PolicyCompile::run`] in force, or returns its error with
    /// nothing changed. If the tailnet changed since it was compiled, the policy is in force
    /// at once (compiled for a moment ago) and recompiled with the batch.
    pub fn put_compiled_policy(
        &mut self,
        fx: &mut Effects,
        compiled: CompiledPolicy,
    ) -> Result<(), PolicyError> {
        let CompiledPolicy {
            policy,
            fingerprint,
            any_routes,
            compiled,
        } = compiled;
        let compiled = compiled?;
        let before = self.access.clone();
        self.access = Access::Policy(Arc::new(PolicyAccess::new(
            policy.clone(),
            compiled,
            any_routes,
        )));
        self.compiled_for = Some(fingerprint);
        self.policy_dirty |= fingerprint != self.policy_fingerprint();
        self.policy = Some(policy.clone());
        self.policy_problem = None;
        // Approvals change nodes: `finish_batch` recompiles for them.
        self.apply_auto_approvals(fx, &policy);
        self.apply_address_attrs(Some(fx));
        // A policy edit that only changes ports or protocols (the usual kind) leaves every
        // node's peers as they were: streams are sent new filters without diffing them.
        self.announce_access_change(fx, &before);
        Ok(())
    }

    /// Re-adopts a policy after the state was rebuilt from the database (the writer does
    /// this after a failed commit): compiled at once, so there is no allow-all moment.
    pub fn restore_policy(&mut self, policy: Option<Arc<Policy>>) {
        self.policy = policy;
        self.compiled_for = None;
        self.recompile_policy();
        self.apply_address_attrs(None);
        // Approvals (which write rows) wait for the next batch.
        self.policy_dirty = self.policy.is_some();
    }

    /// Called by the writer after each batch, before its commit: if anything the policy
    /// depends on changed (nodes added, removed, re-tagged, re-addressed, routes advertised or
    /// approved, users added or renamed), auto-approves routes and returns the recompile to
    /// run, once per batch. Cheap when nothing changed. The writer compiles outside the
    /// lock and hands the result to [`State::finish_recompile`] before it commits, answers
    /// or announces anything; meanwhile readers see the batch with the access compiled
    /// before it (which shows a new node to nobody).
    pub fn finish_batch(&mut self, fx: &mut Effects) -> Option<PolicyCompile> {
        if !self.policy_dirty {
            return None;
        }
        self.policy_dirty = false;
        let policy = self.policy.clone()?;
        self.apply_auto_approvals(fx, &policy);
        self.policy_dirty = false;
        self.recompile_needed()
    }

    /// Puts a recompile [`State::finish_batch`] asked for in force. Only the writer changes
    /// the state and it waits for the compile, so the tailnet is still the one it compiled.
    pub fn finish_recompile(&mut self, fx: &mut Effects, done: CompiledPolicy) {
        let before = self.access.clone();
        self.install(done);
        self.apply_address_attrs(Some(fx));
        // The batch's own changes carry whoever joined or left; the others' peers are
        // diffed only if the recompile changed whom they see.
        self.announce_access_change(fx, &before);
    }

    /// Applies the policy's `disable-ipv4`: a node it newly covers, or no longer covers, is
    /// resent (to itself and its peers) with the addresses the tailnet is now told.
    fn apply_address_attrs(&mut self, mut fx: Option<&mut Effects>) {
        let changed: Vec<(NodeId, bool)> = self
            .nodes
            .values()
            .filter_map(|n| {
                let withheld = self.access.withholds_ipv4(n);
                (n.ipv4_withheld != withheld).then_some((n.id, withheld))
            })
            .collect();
        // Its peers are resent to a node whose flag changed (every stream diffs its peers).
        if !changed.is_empty()
            && let Some(fx) = fx.as_deref_mut()
        {
            fx.announce(Change::Visibility);
        }
        for (id, withheld) in changed {
            let Some(slot) = self.nodes.get_mut(id) else {
                continue;
            };
            let node = Arc::make_mut(slot);
            node.ipv4_withheld = withheld;
            node.peer_json.clear();
            if let Some(fx) = fx.as_deref_mut() {
                fx.announce(Change::NodeUpserted(id));
            }
        }
    }

    /// Cuts every node off (no peers, no packets) and records why: what a broken policy
    /// falls back to, never allow-all.
    pub fn cut_off_everyone(&mut self, problem: &str) {
        tracing::error!("{problem}");
        self.policy_problem = Some(problem.to_owned());
        self.access = deny_all(&self.policy_topology(), &self.settings.server_url);
    }

    /// Tells the streams that `access` replaced `before`: nothing when every node that
    /// stayed has the same peers and filters (a join under `* → *:*`), only new filters
    /// when it has the same peers, otherwise a diff of every stream's peers.
    fn announce_access_change(&self, fx: &mut Effects, before: &Access) {
        if !before.same_peers_as(&self.access) {
            fx.announce(Change::Visibility);
        } else if !before.same_filters_as(&self.access) {
            fx.announce(Change::Filters);
        }
    }

    /// Recompiles the policy in force if its inputs changed since the last compile, here
    /// and now. Returns whether `access` was replaced.
    fn recompile_policy(&mut self) -> bool {
        match self.recompile_needed() {
            Some(recompile) => {
                self.install(recompile.run());
                true
            }
            None => false,
        }
    }

    /// The recompile of the policy in force, if its inputs changed since the last compile.
    fn recompile_needed(&self) -> Option<PolicyCompile> {
        let policy = self.policy.clone()?;
        if self.compiled_for == Some(self.policy_fingerprint()) {
            return None;
        }
        Some(self.compile_later(policy, false))
    }

    /// Puts a recompiled policy in force. Tests are not run again (they judge a policy
    /// when it is set). If it no longer compiles, every node is cut off rather than left
    /// with a stale or wider view: no error widens access.
    fn install(&mut self, done: CompiledPolicy) {
        self.compiled_for = Some(done.fingerprint);
        match done.compiled {
            Ok(compiled) => {
                self.policy_problem = None;
                self.access = Access::Policy(Arc::new(PolicyAccess::new(
                    done.policy,
                    compiled,
                    done.any_routes,
                )));
            }
            Err(e) => self.cut_off_everyone(&format!(
                "the policy no longer compiles against the tailnet ({e}); every node is cut off until the policy is fixed"
            )),
        }
    }

    fn any_routes(&self) -> bool {
        self.nodes
            .values()
            .any(|n| !n.hostinfo.routable_ips.is_empty())
    }

    /// Everything the compiled policy depends on, hashed.
    fn policy_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for u in self.users.values() {
            (u.id, &u.name, &u.email, &u.provider_groups).hash(&mut h);
        }
        let postures = self.policy_defines_postures();
        for n in self.nodes.values() {
            (n.id, policy_inputs_hash(n, postures)).hash(&mut h);
        }
        h.finish()
    }

    /// Whether the policy in force defines `postures` (see `policy_inputs_hash`).
    pub(super) fn policy_defines_postures(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.defines_postures())
    }

    /// Approves the advertised routes `autoApprovers` cover (adds, never removes).
    fn apply_auto_approvals(&mut self, fx: &mut Effects, policy: &Policy) {
        if !self.any_routes() {
            return;
        }
        let topo = self.policy_topology();
        for n in topo.nodes.iter().filter(|n| !n.routable_ips.is_empty()) {
            let missing: Vec<IpNet> = policy
                .auto_approved_routes(&topo, n.id)
                .into_iter()
                .filter(|r| !n.approved_routes.contains(r))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let mut routes = n.approved_routes.clone();
            routes.extend(missing);
            if let Err(e) = self.approve_routes(fx, n.id, routes) {
                tracing::warn!(node = n.id, error = %e, "auto-approving routes failed");
            }
        }
    }

    /// Under a policy, a tag may only be put on a node if `tagOwners` defines it.
    pub(super) fn check_tags_defined(&self, tags: &[String]) -> Result<(), TailnetError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let undefined: Vec<&String> = tags.iter().filter(|t| !policy.defines_tag(t)).collect();
        if undefined.is_empty() {
            Ok(())
        } else {
            Err(TailnetError::Invalid(format!(
                "tag(s) {undefined:?} are not defined in the policy's tagOwners"
            )))
        }
    }

    /// The tags a user-owned registration asked for (`Hostinfo.RequestTags`), if `tagOwners`
    /// lets `user` apply every one of them. Like Tailscale, one tag not permitted refuses the
    /// whole registration rather than silently dropping it.
    pub(super) fn authorize_requested_tags(
        &self,
        user: Option<UserId>,
        requested: &[String],
    ) -> Result<Vec<String>, String> {
        let tags = normalize_tags(requested.to_vec()).map_err(|e| e.to_string())?;
        let refused: Vec<&String> = match (&self.policy, user) {
            (Some(policy), Some(user)) => {
                let topo = Topology {
                    users: self.policy_topology().users,
                    nodes: Vec::new(),
                };
                tags.iter()
                    .filter(|t| !policy.may_apply_tag(&topo, &TagRequester::User(user), t))
                    .collect()
            }
            _ => tags.iter().collect(),
        };
        if refused.is_empty() {
            Ok(tags)
        } else {
            let list = refused
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            Err(format!(
                "requested tags [{list}] are invalid or not permitted{}",
                if self.policy.is_none() {
                    " (no policy is in force, so no tagOwners allow them)"
                } else {
                    ""
                }
            ))
        }
    }
}

/// A compile of a policy against the tailnet as it was at one moment: everything it
/// needs, so that it runs without the state or its lock (on a large tailnet it takes
/// long; the writer runs it off the async workers).
pub struct PolicyCompile {
    policy: Arc<Policy>,
    run_tests: bool,
    topology: Topology,
    fingerprint: u64,
    any_routes: bool,
    server_url: String,
}

/// A [`PolicyCompile`] done.
pub struct CompiledPolicy {
    policy: Arc<Policy>,
    fingerprint: u64,
    any_routes: bool,
    compiled: Result<oxiscale_policy::Compiled, PolicyError>,
}

impl CompiledPolicy {
    pub fn into_result(self) -> Result<oxiscale_policy::Compiled, PolicyError> {
        self.compiled
    }
}

impl PolicyCompile {
    /// The tailnet it compiles against.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn run(self) -> CompiledPolicy {
        let started = std::time::Instant::now();
        let compiled = if self.run_tests {
            self.policy
                .compile_with_url(&self.topology, &self.server_url)
        } else {
            self.policy
                .compile_untested(&self.topology, &self.server_url)
        };
        metrics::histogram!(crate::telemetry::POLICY_COMPILE_SECONDS)
            .record(started.elapsed().as_secs_f64());
        CompiledPolicy {
            policy: self.policy,
            fingerprint: self.fingerprint,
            any_routes: self.any_routes,
            compiled,
        }
    }
}

#[cfg(test)]
impl State {
    /// [`State::finish_batch`] with its recompile run at once, as the writer does.
    pub(crate) fn finish_batch_now(&mut self, fx: &mut Effects) {
        if let Some(compile) = self.finish_batch(fx) {
            let done = compile.run();
            self.finish_recompile(fx, done);
        }
    }
}

/// Access under a policy without rules: nobody sees or reaches anybody.
fn deny_all(topology: &Topology, server_url: &str) -> Access {
    let deny = Arc::new(Policy::parse(r#"{"acls": []}"#).expect("valid literal"));
    let compiled = deny
        .compile_untested(topology, server_url)
        .expect("a policy without rules compiles against any tailnet");
    Access::Policy(Arc::new(PolicyAccess::new(deny, compiled, false)))
}

/// Rules: a policy in force never widens access by failing: one that stops compiling
/// against the tailnet cuts every node off until it is fixed, and one restored after a
/// rebuild is compiled at once (no allow-all moment); auto-approvers add routes, never
/// remove them; no policy means allow-all.
#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// Everyone may reach everyone, and users of the tailnet's domain too: the second rule
    /// compiles only while the first user's email is at example.com.
    const DOMAIN_POLICY: &str = r#"{"acls": [
        {"action": "accept", "src": ["*"], "dst": ["*:*"]},
        {"action": "accept", "src": ["user:*@example.com"], "dst": ["*:*"]}]}"#;

    #[test]
    fn a_policy_that_stops_compiling_cuts_everyone_off() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let mut fx = Effects::default();
        let now = time::OffsetDateTime::now_utc();
        let bob = s
            .create_user(&mut fx, "bob", "", "bob@other.test", "", now)
            .unwrap()
            .id;
        let k = key(&mut s, Some(bob), true, &[]);
        let a = join(&mut s, 1, 1, &k);
        let b = join(&mut s, 2, 2, &k);
        set_policy(&mut s, DOMAIN_POLICY);
        s.finish_batch_now(&mut fx);
        assert!(sees(&s, a, b) && s.policy_problem().is_none());

        // Without alice, the tailnet's domain is bob's: the policy no longer compiles.
        let mut fx = Effects::default();
        s.delete_user(&mut fx, alice).unwrap();
        s.finish_batch_now(&mut fx);
        assert!(s.policy_problem().is_some());
        assert!(!sees(&s, a, b) && !sees(&s, b, a), "cut off, not allow-all");
        assert!(s.packet_filter(s.node(a).unwrap()).is_empty());
        assert!(s.policy().is_some(), "the policy stays in force");
        assert!(fx.changes.contains(&Change::Visibility), "{:?}", fx.changes);

        // Fixed: back as it was.
        set_policy(
            &mut s,
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
        );
        assert!(sees(&s, a, b) && s.policy_problem().is_none());
        s.set_policy(&mut fx, None).unwrap();
        assert!(matches!(s.access(), Access::AllowAll));
    }

    #[test]
    fn a_restored_policy_is_in_force_at_once() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let bob = user(&mut s, "bob");
        let ka = key(&mut s, Some(alice), true, &[]);
        let kb = key(&mut s, Some(bob), true, &[]);
        let a = join(&mut s, 1, 1, &ka);
        let b = join(&mut s, 2, 2, &kb);
        assert!(sees(&s, a, b), "allow-all");
        let policy = Policy::parse(
            r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]}]}"#,
        )
        .unwrap();
        s.restore_policy(Some(Arc::new(policy)));
        assert!(!sees(&s, a, b) && !sees(&s, b, a), "before any batch");
        assert!(s.policy().is_some());
    }

    #[test]
    fn auto_approvers_add_routes_and_never_remove_them() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let r = join(&mut s, 1, 1, &k);
        set_policy(
            &mut s,
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
                "autoApprovers": {"routes": {"10.1.0.0/16": ["alice@"]}}}"#,
        );
        let covered: IpNet = "10.1.2.0/24".parse().unwrap();
        let other: IpNet = "10.9.0.0/24".parse().unwrap();
        let mut fx = advertise(&mut s, r, &[covered, other]);
        s.finish_batch_now(&mut fx);
        assert_eq!(s.node(r).unwrap().approved_routes, vec![covered]);

        // The administrator's approvals stay; what the policy covers is approved again.
        s.approve_routes(&mut fx, r, vec![other]).unwrap();
        s.finish_batch_now(&mut fx);
        assert_eq!(s.node(r).unwrap().approved_routes, vec![covered, other]);
    }

    #[test]
    fn a_batch_hands_its_recompile_to_the_writer_and_until_then_a_newcomer_is_nobodys_peer() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let a = join(&mut s, 1, 1, &k);
        set_policy(
            &mut s,
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
        );
        s.finish_batch_now(&mut Effects::default());

        let b = join(&mut s, 2, 2, &k);
        let mut fx = Effects::default();
        let compile = s
            .finish_batch(&mut fx)
            .expect("a join changes what the policy is compiled against");
        assert!(
            !sees(&s, a, b) && !sees(&s, b, a),
            "the access compiled before the join shows the newcomer to nobody"
        );
        let done = compile.run();
        s.finish_recompile(&mut fx, done);
        assert!(sees(&s, a, b) && sees(&s, b, a));
        assert!(
            s.finish_batch(&mut Effects::default()).is_none(),
            "nothing is left to compile"
        );
    }
}
