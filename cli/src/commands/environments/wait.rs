//! `--wait`: what an observation of an environment means for a wait, the
//! progress lines, and the polling loop, with time injectable for tests.

use std::future::Future;
use std::time::Duration;

use mtp_proto::v1::{Environment, EnvironmentStatus};

use super::status_name;
use crate::errors::CliError;
use crate::output;

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Applied and verified by the cluster's applier agent.
    Ready,
    /// Removed from the cluster (or no longer known to the server).
    Deleted,
}

impl Goal {
    fn describe(self) -> &'static str {
        match self {
            Goal::Ready => "become ready",
            Goal::Deleted => "be deleted",
        }
    }
}

/// What one observation of the environment means for a `--wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not there yet: poll again.
    Continue,
    /// Reached the goal.
    Done,
    /// Will not reach the goal on its own; the text says why.
    Failed(String),
}

/// The pure decision of `--wait`: continue, done or failed, from one
/// observation of the environment.
pub fn decide(goal: Goal, e: &Environment) -> Decision {
    let status = EnvironmentStatus::try_from(e.status).unwrap_or(EnvironmentStatus::Unspecified);
    match (goal, status) {
        (Goal::Ready, EnvironmentStatus::Ready) | (Goal::Deleted, EnvironmentStatus::Deleted) => {
            Decision::Done
        }
        (Goal::Ready, EnvironmentStatus::Failed) => {
            Decision::Failed(if e.reason.trim().is_empty() {
                "the agent reported a failure without a reason".into()
            } else {
                e.reason.clone()
            })
        }
        (Goal::Ready, EnvironmentStatus::Deleting | EnvironmentStatus::Deleted) => {
            Decision::Failed("it is being deleted".into())
        }
        _ => Decision::Continue,
    }
}

/// How `--wait` polls: the first interval, growing by half each time up to
/// `max`, and the overall timeout.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub first: Duration,
    pub max: Duration,
    pub timeout: Duration,
}

impl Poll {
    pub fn with_timeout(timeout: Duration) -> Self {
        Poll {
            first: Duration::from_millis(200),
            max: Duration::from_secs(1),
            timeout,
        }
    }
}

/// Time as `--wait` sees it, injectable so the loop runs without real sleeps
/// in unit tests.
pub trait Clock {
    /// Time since the wait started.
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, d: Duration) -> impl Future<Output = ()>;
}

/// The real clock.
pub struct TokioClock(tokio::time::Instant);

impl TokioClock {
    pub fn start() -> Self {
        TokioClock(tokio::time::Instant::now())
    }
}

impl Clock for TokioClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&mut self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }
}

/// `0.8s` under a minute, else compact (`2m`, `1h5m`).
pub(super) fn elapsed_text(d: Duration) -> String {
    // Sub-second is the normal case for a Ready: show milliseconds, not "0.0s".
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        output::compact_duration(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// One progress line, e.g. `team-a/dev: applying (revision 7)` or
/// `team-a/dev: ready in 0.8s`.
pub fn progress_line(who: &str, e: &Environment, elapsed: Duration) -> String {
    let name = status_name(e.status);
    match EnvironmentStatus::try_from(e.status) {
        Ok(EnvironmentStatus::Ready | EnvironmentStatus::Deleted) => {
            format!("{who}: {name} in {}", elapsed_text(elapsed))
        }
        Ok(EnvironmentStatus::Failed) if !e.reason.is_empty() => {
            format!("{who}: {name}: {}", e.reason)
        }
        Ok(EnvironmentStatus::Applying | EnvironmentStatus::Deleting) if e.revision > 0 => {
            format!("{who}: {name} (revision {})", e.revision)
        }
        _ => format!("{who}: {name}"),
    }
}

/// The `--wait` loop: polls with `fetch` until `decide` says done or failed,
/// or `poll.timeout` passes; reports each change of status or revision through
/// `progress`. For `Goal::Deleted` a NOT_FOUND answer counts as deleted and
/// gives `None`.
pub async fn wait_until<C, F, Fut>(
    goal: Goal,
    who: &str,
    poll: Poll,
    clock: &mut C,
    mut fetch: F,
    mut progress: impl FnMut(&str),
) -> Result<Option<Environment>, CliError>
where
    C: Clock,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Environment, CliError>>,
{
    let mut interval = poll.first;
    let mut last: Option<(i32, i64)> = None;
    loop {
        let env = match fetch().await {
            Ok(env) => env,
            Err(CliError::Call(e)) if goal == Goal::Deleted && e.code == tonic::Code::NotFound => {
                progress(&format!(
                    "{who}: deleted in {}",
                    elapsed_text(clock.elapsed())
                ));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let elapsed = clock.elapsed();
        if last != Some((env.status, env.revision)) {
            progress(&progress_line(who, &env, elapsed));
            last = Some((env.status, env.revision));
        }
        match decide(goal, &env) {
            Decision::Done => return Ok(Some(env)),
            Decision::Failed(why) => {
                return Err(CliError::Failed(format!(
                    "{who} failed on cluster {}: {why}",
                    env.cluster
                )));
            }
            Decision::Continue => {}
        }
        if elapsed >= poll.timeout {
            return Err(CliError::Timeout(format!(
                "timed out after {} waiting for {who} to {} (status: {})",
                output::compact_duration(i64::try_from(poll.timeout.as_secs()).unwrap_or(i64::MAX)),
                goal.describe(),
                status_name(env.status)
            )));
        }
        clock.sleep(interval.min(poll.timeout - elapsed)).await;
        interval = (interval * 3 / 2).min(poll.max);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::env;
    use super::*;

    fn with(status: EnvironmentStatus, revision: i64, reason: &str) -> Environment {
        Environment {
            status: status as i32,
            revision,
            reason: reason.into(),
            ..env()
        }
    }

    #[test]
    fn decisions() {
        use EnvironmentStatus as S;
        for s in [S::Pending, S::Applying, S::Unspecified] {
            assert_eq!(decide(Goal::Ready, &with(s, 1, "")), Decision::Continue);
        }
        assert_eq!(decide(Goal::Ready, &with(S::Ready, 1, "")), Decision::Done);
        assert_eq!(
            decide(Goal::Ready, &with(S::Failed, 1, "LimitRange refused")),
            Decision::Failed("LimitRange refused".into())
        );
        assert!(matches!(
            decide(Goal::Ready, &with(S::Failed, 1, "")),
            Decision::Failed(r) if r.contains("without a reason")
        ));
        assert!(matches!(
            decide(Goal::Ready, &with(S::Deleting, 1, "")),
            Decision::Failed(_)
        ));
        for s in [S::Ready, S::Failed, S::Deleting, S::Pending] {
            assert_eq!(decide(Goal::Deleted, &with(s, 1, "")), Decision::Continue);
        }
        assert_eq!(
            decide(Goal::Deleted, &with(S::Deleted, 1, "")),
            Decision::Done
        );
        assert_eq!(
            decide(
                Goal::Ready,
                &Environment {
                    status: 99,
                    ..env()
                }
            ),
            Decision::Continue
        );
    }

    #[test]
    fn progress_lines() {
        use EnvironmentStatus as S;
        let ms = Duration::from_millis;
        assert_eq!(
            progress_line("team-a/dev", &with(S::Pending, 7, ""), ms(0)),
            "team-a/dev: pending"
        );
        assert_eq!(
            progress_line("team-a/dev", &with(S::Applying, 7, ""), ms(0)),
            "team-a/dev: applying (revision 7)"
        );
        assert_eq!(
            progress_line("team-a/dev", &with(S::Ready, 7, ""), ms(800)),
            "team-a/dev: ready in 800ms"
        );
        assert_eq!(
            progress_line("team-a/dev", &with(S::Deleted, 8, ""), ms(125_000)),
            "team-a/dev: deleted in 2m"
        );
        assert_eq!(
            progress_line("team-a/dev", &with(S::Failed, 7, "boom"), ms(0)),
            "team-a/dev: failed: boom"
        );
    }

    /// Virtual time: `sleep` only advances the clock and records the interval.
    #[derive(Default)]
    struct FakeClock {
        now: Duration,
        sleeps: Vec<Duration>,
    }

    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.now
        }

        fn sleep(&mut self, d: Duration) -> impl Future<Output = ()> {
            self.now += d;
            self.sleeps.push(d);
            std::future::ready(())
        }
    }

    /// Runs the wait loop over scripted answers (the last one repeats).
    fn run_wait(
        goal: Goal,
        timeout: Duration,
        answers: Vec<Result<Environment, CliError>>,
    ) -> (
        Result<Option<Environment>, CliError>,
        Vec<String>,
        FakeClock,
    ) {
        let mut answers: std::collections::VecDeque<_> = answers.into();
        let mut clock = FakeClock::default();
        let mut lines = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = rt.block_on(wait_until(
            goal,
            "team-a/dev",
            Poll::with_timeout(timeout),
            &mut clock,
            || {
                let next = if answers.len() > 1 {
                    answers.pop_front().unwrap()
                } else {
                    match answers.front().unwrap() {
                        Ok(e) => Ok(e.clone()),
                        Err(_) => answers.pop_front().unwrap(),
                    }
                };
                std::future::ready(next)
            },
            |l| lines.push(l.to_string()),
        ));
        (result, lines, clock)
    }

    #[test]
    fn wait_reports_each_change_once_and_returns_when_ready() {
        use EnvironmentStatus as S;
        let (res, lines, clock) = run_wait(
            Goal::Ready,
            Duration::from_secs(300),
            vec![
                Ok(with(S::Pending, 7, "")),
                Ok(with(S::Pending, 7, "")),
                Ok(with(S::Applying, 7, "")),
                Ok(with(S::Applying, 7, "")),
                Ok(with(S::Ready, 7, "")),
            ],
        );
        assert_eq!(res.unwrap().unwrap().status, S::Ready as i32);
        assert_eq!(
            lines,
            [
                "team-a/dev: pending",
                "team-a/dev: applying (revision 7)",
                "team-a/dev: ready in 1.6s"
            ]
        );
        // 200 ms, growing by half each poll.
        let ms: Vec<u128> = clock.sleeps.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [200, 300, 450, 675]);
    }

    #[test]
    fn wait_backs_off_to_one_second_and_times_out_with_the_last_status() {
        use EnvironmentStatus as S;
        let (res, lines, clock) = run_wait(
            Goal::Ready,
            Duration::from_secs(5),
            vec![Ok(with(S::Applying, 3, ""))],
        );
        let err = res.unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.render_human(),
            "error: timed out after 5s waiting for team-a/dev to become ready (status: applying)"
        );
        assert_eq!(lines, ["team-a/dev: applying (revision 3)"]);
        assert_eq!(
            clock.now,
            Duration::from_secs(5),
            "never sleeps past the timeout"
        );
        assert!(clock.sleeps.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(clock.sleeps.contains(&Duration::from_secs(1)));
    }

    #[test]
    fn wait_fails_with_the_agents_reason() {
        use EnvironmentStatus as S;
        let (res, lines, _) = run_wait(
            Goal::Ready,
            Duration::from_secs(300),
            vec![
                Ok(with(S::Applying, 3, "")),
                Ok(with(S::Failed, 3, "ResourceQuota: admission denied")),
            ],
        );
        let err = res.unwrap_err();
        assert_eq!(err.exit_code(), 5);
        let msg = err.render_human();
        assert!(msg.contains("team-a/dev failed on cluster k3s-1"), "{msg}");
        assert!(msg.contains("ResourceQuota: admission denied"), "{msg}");
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn wait_for_deletion_accepts_deleted_or_not_found() {
        use EnvironmentStatus as S;
        let (res, lines, _) = run_wait(
            Goal::Deleted,
            Duration::from_secs(300),
            vec![Ok(with(S::Deleting, 9, "")), Ok(with(S::Deleted, 9, ""))],
        );
        assert_eq!(res.unwrap().unwrap().status, S::Deleted as i32);
        assert_eq!(lines[0], "team-a/dev: deleting (revision 9)");
        assert!(lines[1].starts_with("team-a/dev: deleted in "), "{lines:?}");

        let not_found = || {
            CliError::Call(crate::errors::CallError {
                action: "get environment team-a/dev".into(),
                code: tonic::Code::NotFound,
                message: "not found".into(),
                request_id: None,
                addr: "http://x".into(),
                hint: None,
            })
        };
        let (res, lines, _) = run_wait(
            Goal::Deleted,
            Duration::from_secs(300),
            vec![Ok(with(S::Deleting, 9, "")), Err(not_found())],
        );
        assert!(res.unwrap().is_none());
        assert_eq!(lines.len(), 2);
        // While waiting for Ready, NOT_FOUND is an error like any other.
        let (res, _, _) = run_wait(
            Goal::Ready,
            Duration::from_secs(300),
            vec![Err(not_found())],
        );
        assert_eq!(res.unwrap_err().exit_code(), 3);
    }
}
