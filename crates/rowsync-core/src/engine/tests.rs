//! One test per transition of the engine, with no I/O: events in, actions out.

use super::*;

fn config() -> Config {
    Config {
        pull_limit: 100,
        push_limit: 10,
        push_bytes: 1_000,
        gather_ms: 5,
        check_every_ms: 60_000,
        ..Config::default()
    }
}

fn once() -> Engine {
    Engine::new(Mode::Once, config(), 7)
}

fn continuous() -> Engine {
    Engine::new(Mode::Continuous, config(), 7)
}

/// The steps among `actions`.
fn steps(actions: &[Action]) -> Vec<Step> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Run(step) => Some(step.clone()),
            _ => None,
        })
        .collect()
}

fn last_state(actions: &[Action]) -> Option<State> {
    actions.iter().rev().find_map(|a| match a {
        Action::Publish(status) => Some(status.state.clone()),
        _ => None,
    })
}

fn pulled(cursor: u64, more: bool) -> Event {
    Event::Done(Done::Pulled { changes: 3, applied: 2, cursor, more, took_us: 1_000 })
}

fn refused(code: ErrorCode, change: Option<usize>, sent: usize) -> Event {
    Event::Failed(Failure::Refused { code, message: format!("{code:?}"), change, max_clock_ms: Some(1_000), sent })
}

fn unreachable() -> Event {
    Event::Failed(Failure::Unreachable { detail: "connection refused".into() })
}

const PULL: Step = Step::Pull { limit: 100 };
const PUSH: Step = Step::Push { limit: 10, bytes: 1_000 };

/// Runs a full round to its end with nothing to push, at time `now`.
fn quiet_full_round(engine: &mut Engine, now: u64) -> Vec<Action> {
    engine.handle(now, Event::Done(Done::Prepared { notes: vec![], pending: 0 }));
    engine.handle(now, pulled(5, false));
    engine.handle(now, Event::Done(Done::NothingToPush { notes: vec![] }));
    engine.handle(now, pulled(5, false))
}

#[test]
fn a_full_round_prepares_pulls_until_caught_up_pushes_until_empty_then_pulls() {
    let mut engine = once();
    let actions = engine.start();
    assert_eq!(last_state(&actions), Some(State::Connecting));
    assert_eq!(steps(&actions), vec![Step::Prepare]);
    let notes = vec!["found a missed write".to_string()];
    assert_eq!(steps(&engine.handle(0, Event::Done(Done::Prepared { notes, pending: 4 }))), vec![PULL]);
    assert_eq!(steps(&engine.handle(0, pulled(10, true))), vec![PULL]);
    assert_eq!(steps(&engine.handle(0, pulled(20, false))), vec![PUSH]);
    let actions = engine.handle(0, Event::Done(Done::Pushed { changes: 3, acknowledged: 3, notes: vec![] }));
    assert_eq!(steps(&actions), vec![PUSH]);
    assert_eq!(last_state(&actions), Some(State::Syncing { done: 9, remaining: 1 }));
    assert_eq!(steps(&engine.handle(0, Event::Done(Done::NothingToPush { notes: vec![] }))), vec![PULL]);
    let actions = engine.handle(0, pulled(21, false));
    let report = Report {
        pulled: 9,
        applied: 6,
        pushed: 3,
        acknowledged: 3,
        pull_pages: 3,
        push_batches: 1,
        cursor: 21,
        notes: vec!["found a missed write".into()],
        ..Report::default()
    };
    assert_eq!(actions, vec![Action::RoundDone(report), Action::Stopped]);
    assert!(engine.handle(0, Event::SyncAsked).is_empty(), "a stopped engine does nothing");
}

#[test]
fn a_refused_change_is_set_aside_with_its_reason_and_the_rest_is_pushed() {
    let mut engine = once();
    engine.start();
    engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 2 }));
    engine.handle(0, pulled(1, false));
    let actions = engine.handle(0, refused(ErrorCode::InvalidValue, Some(1), 2));
    assert_eq!(steps(&actions), vec![Step::SetAside { change: 1, reason: "InvalidValue".into() }]);
    assert_eq!(steps(&engine.handle(0, Event::Done(Done::SetAside))), vec![PUSH]);
    engine.handle(0, Event::Done(Done::Pushed { changes: 1, acknowledged: 1, notes: vec![] }));
    engine.handle(0, Event::Done(Done::NothingToPush { notes: vec![] }));
    let actions = engine.handle(0, pulled(1, false));
    let Some(Action::RoundDone(report)) = actions.first() else { panic!("{actions:?}") };
    assert_eq!((report.rejected, report.rejections.clone()), (1, vec!["InvalidValue".to_string()]));
    assert_eq!(engine.status().refused, 1);
}

#[test]
fn a_batch_too_large_is_halved_and_a_single_row_too_large_is_set_aside() {
    let mut engine = once();
    engine.start();
    engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 10 }));
    engine.handle(0, pulled(1, false));
    let actions = engine.handle(0, refused(ErrorCode::BodyTooLarge, None, 10));
    assert_eq!(steps(&actions), vec![Step::Push { limit: 5, bytes: 500 }]);
    let actions = engine.handle(0, refused(ErrorCode::BodyTooLarge, None, 1));
    let [Step::SetAside { change: 0, reason }] = &steps(&actions)[..] else { panic!("{actions:?}") };
    assert!(reason.starts_with("the row is more than the server accepts"), "{reason}");
    assert_eq!(steps(&engine.handle(0, Event::Done(Done::SetAside))), vec![Step::Push { limit: 5, bytes: 500 }]);
}

#[test]
fn a_copied_file_takes_a_new_identity_once_then_pulls_everything_and_pushes() {
    let mut engine = once();
    engine.start();
    engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 1 }));
    let actions = engine.handle(0, refused(ErrorCode::SiteReused, None, 0));
    assert_eq!(steps(&actions), vec![Step::RenewIdentity]);
    let actions = engine.handle(0, Event::Done(Done::Renewed { note: "new id".into() }));
    assert_eq!(steps(&actions), vec![PULL]);
    assert_eq!(steps(&engine.handle(0, pulled(9, false))), vec![PUSH]);
    let actions = engine.handle(0, refused(ErrorCode::SiteReused, None, 1));
    assert!(matches!(actions[..], [Action::RoundFailed(_), Action::Stopped]), "only once: {actions:?}");
}

#[test]
fn a_cursor_the_server_no_longer_serves_starts_the_download_over_once() {
    let mut engine = once();
    engine.start();
    engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 1 }));
    let actions = engine.handle(0, refused(ErrorCode::CursorExpired, None, 0));
    assert_eq!(steps(&actions), vec![Step::StartOver]);
    let actions = engine.handle(0, Event::Done(Done::StartedOver { note: "again".into() }));
    assert_eq!(steps(&actions), vec![PULL], "the download starts over, then the writes are pushed");
    assert_eq!(steps(&engine.handle(0, pulled(9, false))), vec![PUSH]);
    engine.handle(0, Event::Done(Done::NothingToPush { notes: vec![] }));
    let actions = engine.handle(0, refused(ErrorCode::CursorExpired, None, 0));
    assert!(matches!(actions[..], [Action::RoundFailed(_), Action::Stopped]), "only once: {actions:?}");
}

#[test]
fn a_remote_round_that_finds_a_copied_file_goes_on_to_push() {
    let mut engine = continuous();
    engine.start();
    quiet_full_round(&mut engine, 0);
    engine.handle(1, Event::Heard { news: true, cursor: 6 });
    engine.handle(1, refused(ErrorCode::SiteReused, None, 0));
    engine.handle(1, Event::Done(Done::Renewed { note: "new id".into() }));
    assert_eq!(steps(&engine.handle(1, pulled(9, false))), vec![PUSH]);
}

#[test]
fn a_clock_that_ran_ahead_is_corrected_once_and_pushing_goes_on() {
    let mut engine = once();
    engine.start();
    engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 1 }));
    engine.handle(0, pulled(1, false));
    let actions = engine.handle(0, refused(ErrorCode::ClockSkew, None, 1));
    assert_eq!(steps(&actions), vec![Step::CorrectClock { max_clock_ms: 1_000 }]);
    assert_eq!(steps(&engine.handle(0, Event::Done(Done::ClockCorrected { rows: 2 }))), vec![PUSH]);
    let actions = engine.handle(0, refused(ErrorCode::ClockSkew, None, 1));
    assert!(matches!(actions[..], [Action::RoundFailed(_), Action::Stopped]), "only once: {actions:?}");
}

#[test]
fn a_clock_that_cannot_be_corrected_shows_as_its_own_state() {
    let mut engine = continuous();
    engine.start();
    engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 1 }));
    engine.handle(0, pulled(1, false));
    engine.handle(0, refused(ErrorCode::ClockSkew, None, 1));
    let actions = engine.handle(0, Event::Done(Done::ClockCorrected { rows: 0 }));
    assert!(matches!(last_state(&actions), Some(State::ClockAhead { .. })), "{actions:?}");
}

#[test]
fn in_once_mode_a_failure_ends_the_round_and_the_engine() {
    let mut engine = once();
    engine.start();
    let actions = engine.handle(0, unreachable());
    assert_eq!(
        actions,
        vec![Action::RoundFailed(Failure::Unreachable { detail: "connection refused".into() }), Action::Stopped]
    );
}

#[test]
fn offline_retries_back_off_exponentially_with_jitter_and_reset_on_success() {
    let mut engine = continuous();
    engine.start();
    let mut now = 0;
    let mut ceilings = Vec::new();
    for failures in 1..=10 {
        let actions = engine.handle(now, unreachable());
        let Some(State::Offline { retry_in_ms, reason }) = last_state(&actions) else { panic!("{actions:?}") };
        assert_eq!(reason, "connection refused");
        let ceiling = config().backoff.ceiling(failures);
        assert!((ceiling / 2..=ceiling).contains(&retry_in_ms), "{retry_in_ms} after {failures} failure(s)");
        ceilings.push(ceiling);
        assert_eq!(engine.deadline(), Some(now + retry_in_ms));
        assert!(engine.handle(now + retry_in_ms - 1, Event::Tick).is_empty(), "not before the deadline");
        now += retry_in_ms;
        assert_eq!(steps(&engine.handle(now, Event::Tick)), vec![Step::Prepare], "a retry is a full round");
    }
    assert_eq!(ceilings[..8], [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000]);
    quiet_full_round(&mut engine, now);
    assert_eq!(steps(&engine.handle(now, Event::SyncAsked)), vec![Step::Prepare]);
    let actions = engine.handle(now, unreachable());
    let Some(State::Offline { retry_in_ms, .. }) = last_state(&actions) else { panic!("{actions:?}") };
    assert!(retry_in_ms <= 500, "success resets the backoff: {retry_in_ms}");
}

#[test]
fn the_same_seed_draws_the_same_delays() {
    let delays = |seed| {
        let mut engine = Engine::new(Mode::Continuous, config(), seed);
        engine.start();
        (0..5)
            .map(|_| {
                let actions = engine.handle(0, unreachable());
                engine.handle(engine.deadline().unwrap(), Event::Tick);
                last_state(&actions)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(delays(1), delays(1));
    assert_ne!(delays(1), delays(2));
}

#[test]
fn when_idle_it_listens_from_its_cursor_and_checks_now_and_then() {
    let mut engine = continuous();
    engine.start();
    let actions = quiet_full_round(&mut engine, 100);
    assert!(matches!(actions[0], Action::RoundDone(_)));
    assert_eq!(last_state(&actions), Some(State::Idle));
    assert!(actions.contains(&Action::Listen { cursor: 5 }), "{actions:?}");
    assert_eq!(engine.deadline(), Some(100 + 60_000));
    assert_eq!(steps(&engine.handle(60_100, Event::Tick)), vec![Step::Prepare]);
}

#[test]
fn news_heard_starts_a_pull_and_listening_resumes_from_the_new_cursor() {
    let mut engine = continuous();
    engine.start();
    quiet_full_round(&mut engine, 0);
    assert_eq!(engine.handle(10, Event::Heard { news: false, cursor: 7 }), vec![Action::Listen { cursor: 7 }]);
    assert_eq!(steps(&engine.handle(20, Event::Heard { news: true, cursor: 9 })), vec![PULL]);
    let actions = engine.handle(21, pulled(12, false));
    assert!(matches!(actions[0], Action::RoundDone(_)));
    assert!(actions.contains(&Action::Listen { cursor: 12 }), "{actions:?}");
}

#[test]
fn local_commits_gather_briefly_then_go_out_in_one_round() {
    let mut engine = continuous();
    engine.start();
    quiet_full_round(&mut engine, 0);
    assert!(steps(&engine.handle(10, Event::LocalCommit)).is_empty());
    assert!(steps(&engine.handle(12, Event::LocalCommit)).is_empty());
    assert_eq!(engine.deadline(), Some(15));
    assert_eq!(steps(&engine.handle(15, Event::Tick)), vec![Step::Stamp]);
    let actions = engine.handle(15, Event::Done(Done::Stamped { pending: 2 }));
    assert_eq!(steps(&actions), vec![PUSH]);
    // Commits made while the round runs are merged into one round after it.
    for _ in 0..5 {
        assert!(engine.handle(16, Event::LocalCommit).is_empty());
    }
    engine.handle(17, Event::Done(Done::Pushed { changes: 2, acknowledged: 2, notes: vec![] }));
    engine.handle(17, Event::Done(Done::NothingToPush { notes: vec![] }));
    let actions = engine.handle(18, pulled(6, false));
    assert_eq!(steps(&actions), vec![Step::Stamp], "one more round: {actions:?}");
    engine.handle(18, Event::Done(Done::Stamped { pending: 5 }));
    engine.handle(18, Event::Done(Done::NothingToPush { notes: vec![] }));
    let actions = engine.handle(18, pulled(6, false));
    assert!(steps(&actions).is_empty(), "and then idle: {actions:?}");
}

#[test]
fn a_local_commit_waits_out_a_backoff_but_a_sync_asked_for_does_not() {
    let mut engine = continuous();
    engine.start();
    engine.handle(0, unreachable());
    let deadline = engine.deadline().unwrap();
    assert!(engine.handle(1, Event::LocalCommit).is_empty());
    assert_eq!(engine.deadline(), Some(deadline));
    assert_eq!(steps(&engine.handle(2, Event::SyncAsked)), vec![Step::Prepare]);
}

#[test]
fn a_failed_long_poll_while_idle_shows_offline_and_retries() {
    let mut engine = continuous();
    engine.start();
    quiet_full_round(&mut engine, 0);
    let actions = engine.handle(5, Event::HearingFailed(Failure::Unreachable { detail: "reset".into() }));
    assert!(matches!(last_state(&actions), Some(State::Offline { .. })), "{actions:?}");
    assert!(engine.deadline().unwrap() <= 5 + 500);
}

#[test]
fn stop_while_idle_stops_at_once() {
    let mut engine = continuous();
    engine.start();
    quiet_full_round(&mut engine, 0);
    let actions = engine.handle(1, Event::StopAsked);
    assert_eq!(actions, vec![Action::Publish(Status { state: State::Stopped, refused: 0 }), Action::Stopped]);
    assert_eq!(engine.deadline(), None);
}

#[test]
fn stop_while_a_step_runs_lets_it_finish_and_starts_nothing_more() {
    let mut engine = continuous();
    engine.start();
    engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 5 }));
    engine.handle(0, pulled(1, false));
    assert!(engine.handle(1, Event::StopAsked).is_empty(), "the push in flight finishes first");
    let actions = engine.handle(2, Event::Done(Done::Pushed { changes: 2, acknowledged: 2, notes: vec![] }));
    assert!(steps(&actions).is_empty(), "{actions:?}");
    assert!(actions.iter().any(|a| matches!(a, Action::RoundDone(r) if r.acknowledged == 2)), "{actions:?}");
    assert_eq!(actions.last(), Some(&Action::Stopped));
}

#[test]
fn stop_while_a_step_fails_reports_the_failure_and_stops_without_retrying() {
    let mut engine = continuous();
    engine.start();
    engine.handle(1, Event::StopAsked);
    let actions = engine.handle(2, refused(ErrorCode::SiteReused, None, 0));
    assert!(matches!(actions[..], [Action::RoundFailed(_), Action::Publish(_), Action::Stopped]), "{actions:?}");
}

#[test]
fn the_next_pull_asks_for_the_size_the_last_page_showed_fits() {
    let mut engine = Engine::new(Mode::Once, Config { pull_limit: 5_000, ..config() }, 7);
    let actions = engine.start();
    assert_eq!(steps(&actions), vec![Step::Prepare]);
    let actions = engine.handle(0, Event::Done(Done::Prepared { notes: vec![], pending: 0 }));
    assert_eq!(steps(&actions), vec![Step::Pull { limit: 1_000 }], "the first page, before any pace is known");
    let page = Done::Pulled { changes: 1_000, applied: 1_000, cursor: 1_000, more: true, took_us: 100_000 };
    let actions = engine.handle(0, Event::Done(page));
    assert_eq!(steps(&actions), vec![Step::Pull { limit: 200 }], "1,000 changes took 100 ms: 250 fit in 25 ms");
}
