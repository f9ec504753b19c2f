"""The session core (``iscsifs.proto.session``), synchronously: no trio, no clock, time is a
number. Its tables pair by pair, then each failure scenario as the I/O layer meets it: a command
never answered, a connection that drops mid-write, a logout the target asks for, a worker that
dies, the keepalive and the relogins."""

from __future__ import annotations

import itertools
import math

import pytest
from iscsifs.proto.errors import CommandFailed, Delivery, LocalProtocolError, Undelivered
from iscsifs.proto.lifecycle import step
from iscsifs.proto.policy import RecoveryPolicy
from iscsifs.proto.session import (
    ASYNC_ACTIONS,
    SESSION_TRANSITIONS,
    TASK_LADDER,
    AbortTask,
    AsyncAsk,
    AsyncResponse,
    Attempts,
    Drain,
    DropConnection,
    EndTask,
    GiveUp,
    LogIn,
    LoginFailure,
    Logout,
    Renegotiate,
    ResetLun,
    Rung,
    SendNop,
    SessionCore,
    SessionInput,
    SessionState,
    TaskInput,
    TaskState,
)

POLICY = RecoveryPolicy(nop_interval=60, nop_timeout=5, command_timeout=3, recovery_timeout=10,
                        retries=5, probe_interval=1, max_backoff=8)
S, E = SessionState, SessionInput

SESSION_EXPECTED = {
    (S.LOGGED_IN, E.CONNECTION_LOST): S.RECOVERING,
    (S.LOGGED_IN, E.LOGOUT_REQUESTED): S.DRAINING,
    (S.DRAINING, E.LOGOUT_REQUESTED): S.DRAINING,
    (S.DRAINING, E.DRAINED): S.LOGGING_OUT,
    (S.DRAINING, E.CONNECTION_LOST): S.RECOVERING,
    (S.LOGGING_OUT, E.LOGGED_OUT): S.RECOVERING,
    (S.LOGGING_OUT, E.CONNECTION_LOST): S.LOGGING_OUT,
    (S.LOGGING_OUT, E.LOGOUT_REQUESTED): S.LOGGING_OUT,
    (S.LOGGING_OUT, E.DRAINED): S.LOGGING_OUT,
    (S.RECOVERING, E.LOGGED_IN): S.LOGGED_IN,
    (S.RECOVERING, E.LOGIN_FAILED): S.RECOVERING,
    (S.RECOVERING, E.LOGIN_REFUSED): S.FAILED,
    (S.RECOVERING, E.CONNECTION_LOST): S.RECOVERING,
    (S.RECOVERING, E.LOGOUT_REQUESTED): S.RECOVERING,
    (S.RECOVERING, E.DRAINED): S.RECOVERING,
    (S.RECOVERING, E.LOGGED_OUT): S.RECOVERING,
    (S.FAILED, E.CONNECTION_LOST): S.FAILED,
    (S.FAILED, E.LOGGED_OUT): S.FAILED,
    (S.FAILED, E.DRAINED): S.FAILED,
    **{(state, E.CLOSE): S.CLOSED for state in S},
    **{(S.CLOSED, event): S.CLOSED for event in E},
}
# Missing, so refused as bugs of ours: a login or its failure while logged in, draining or logging
# out (one session has one login at a time), a drain or a logout that was never started.


def test_every_session_pair_is_decided():
    for state, event in itertools.product(S, E):
        if (state, event) in SESSION_EXPECTED:
            assert step(SESSION_TRANSITIONS, state, event) is SESSION_EXPECTED[state, event], (state, event)
        else:
            with pytest.raises(LocalProtocolError):
                step(SESSION_TRANSITIONS, state, event)
    assert set(SESSION_TRANSITIONS) == set(SESSION_EXPECTED)


def test_the_ladder_is_abort_then_reset_then_drop():
    T, TI = TaskState, TaskInput
    assert TASK_LADDER == {
        (T.SENT, TI.DEADLINE): Rung.ABORT,
        (T.ABORTING, TI.TMF_DONE): Rung.ABORTED,
        (T.ABORTING, TI.TMF_REFUSED): Rung.RESET,
        (T.ABORTING, TI.DEADLINE): Rung.RESET,
        (T.RESETTING, TI.TMF_DONE): Rung.RESET_DONE,
        (T.RESETTING, TI.TMF_REFUSED): Rung.DROP,
        (T.RESETTING, TI.DEADLINE): Rung.DROP,
    }


def test_every_async_event_has_its_row():
    assert set(ASYNC_ACTIONS) == set(AsyncAsk)
    assert ASYNC_ACTIONS[AsyncAsk.LOGOUT] is AsyncResponse.DRAIN_THEN_LOGOUT
    assert ASYNC_ACTIONS[AsyncAsk.DROP_CONNECTION] is ASYNC_ACTIONS[AsyncAsk.DROP_SESSION] is AsyncResponse.LOST
    assert ASYNC_ACTIONS[AsyncAsk.RENEGOTIATE] is AsyncResponse.RENEGOTIATE


def _logged_in(now: float = 0.0) -> SessionCore:
    core = SessionCore(POLICY, now)
    assert core.handle_timer(now) == (LogIn(),)  # a new core logs in at once
    assert core.logged_in(now, time2wait=2) == ()
    return core


def _ends(actions) -> dict[int, Delivery]:
    return {a.initiator_task_tag: a.delivery for a in actions if isinstance(a, EndTask)}


# -- a command that is never answered ---------------------------------------------------------------


def test_a_late_command_is_aborted_at_its_deadline_and_its_attempt_ends_when_the_abort_is_done():
    core = _logged_in()
    core.command_sent(7, lun=1, now=0.0, expires=100.0)
    core.command_sent(8, lun=1, now=0.5, expires=100.0)
    assert core.timer() == 3.0
    assert core.handle_timer(2.9) == ()
    assert core.handle_timer(3.0) == (AbortTask(7, 1),)
    assert core.handle_timer(3.5) == (AbortTask(8, 1),)
    (end,) = core.task_management_done(7, 1, done=True, now=3.1)
    assert (end.initiator_task_tag, end.delivery) == (7, Delivery.ABORTED)
    assert core.command_ended(7) == ()  # the I/O layer reports the wait's end: nothing more
    assert list(core.tasks) == [8] and core.usable


def test_an_unanswered_abort_resets_the_lun_and_the_reset_ends_every_task_of_that_lun():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    core.command_sent(2, lun=0, now=2.0, expires=100.0)  # on time so far: the reset ends it too
    core.command_sent(3, lun=5, now=2.0, expires=100.0)  # another LUN: untouched
    assert core.handle_timer(3.0) == (AbortTask(1, 0),)
    assert core.handle_timer(7.0) == (ResetLun(0), AbortTask(2, 0), AbortTask(3, 5))
    assert _ends(core.task_management_done(None, 0, done=True, now=7.5)) == {1: Delivery.RESET, 2: Delivery.RESET}
    assert list(core.tasks) == [3]


def test_a_refused_abort_resets_and_a_refused_reset_drops_the_connection():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    assert core.handle_timer(3.0) == (AbortTask(1, 0),)
    assert core.task_management_done(1, 0, done=False, now=3.2) == (ResetLun(0),)
    (drop,) = core.task_management_done(None, 0, done=False, now=3.4)
    assert isinstance(drop, DropConnection)
    # The I/O layer closes the connection and reports the loss: the task ends, the session is
    # reinstated after Time2Wait.
    assert _ends(core.connection_lost(3.5, drop.reason)) == {1: Delivery.CONNECTION_DIED}
    assert core.state is S.RECOVERING and not core.usable
    assert core.timer() == 5.5 and core.handle_timer(5.5) == (LogIn(),)


def test_a_reset_that_gets_no_answer_drops_the_connection_at_its_deadline():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    core.handle_timer(3.0)
    assert core.handle_timer(7.0) == (ResetLun(0),)
    (drop,) = core.handle_timer(11.0)
    assert isinstance(drop, DropConnection)


def test_an_answer_to_the_abort_after_the_command_was_answered_changes_nothing():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    assert core.handle_timer(3.0) == (AbortTask(1, 0),)
    assert core.command_ended(1) == ()  # its answer came after all
    assert core.task_management_done(1, 0, done=True, now=3.1) == ()
    assert core.task_management_done(1, 0, done=False, now=3.1) == ()


def test_a_command_past_its_bound_ends_expired_and_its_connection_is_dropped():
    # Whatever rung the ladder is on, the caller's time is the bound; a task the target may still
    # hold must not land after a later write, so its connection goes (reinstatement ends it).
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=5.0)
    assert core.handle_timer(3.0) == (AbortTask(1, 0),)
    end, drop = core.handle_timer(5.0)
    assert (end.initiator_task_tag, end.delivery) == (1, Delivery.EXPIRED) and isinstance(drop, DropConnection)


def test_the_budget_of_a_command_that_is_never_answered():
    # command_timeout 3, retries 5: sent 6 times, aborted each time, then EIO with what was tried.
    attempts = Attempts("command 0x28 at LBA 9 on LUN 1 of t", 0.0, POLICY)
    assert attempts.expires == 3 * 6 + 10 == POLICY.command_bound
    for n in range(1, 6):
        attempts.after(Undelivered(Delivery.ABORTED, "aborted"), now=3.0 * n)
    with pytest.raises(CommandFailed) as failed:
        attempts.after(Undelivered(Delivery.ABORTED, "aborted"), now=18.0)
    assert attempts.sends == 6
    assert "LBA 9" in str(failed.value) and "aborted after its deadline 6x" in str(failed.value)
    assert failed.value.errno == 5  # EIO


def test_never_sent_costs_no_budget_but_time_still_bounds_it():
    attempts = Attempts("c", 0.0, POLICY.__class__(retries=0, command_timeout=3, recovery_timeout=10))
    for _ in range(100):
        attempts.after(Undelivered(Delivery.NEVER_SENT, "draining"), now=1.0)
    assert attempts.sends == 0
    with pytest.raises(CommandFailed):
        attempts.after(Undelivered(Delivery.NEVER_SENT, "draining"), now=13.0)


def test_retries_zero_sends_once():
    attempts = Attempts("c", 0.0, RecoveryPolicy(retries=0))
    with pytest.raises(CommandFailed):
        attempts.after(Undelivered(Delivery.CONNECTION_DIED, "lost"), now=1.0)


def test_an_expired_attempt_is_never_sent_again():
    attempts = Attempts("c", 0.0, POLICY)
    with pytest.raises(CommandFailed):
        attempts.after(Undelivered(Delivery.EXPIRED, "its time ran out"), now=1.0)


# -- a connection that drops mid-write ----------------------------------------------------------------


def test_a_connection_lost_mid_write_ends_every_task_as_sent_then_died_and_reinstates_after_time2wait():
    core = _logged_in()
    for itt in (1, 2, 3):
        core.command_sent(itt, lun=0, now=1.0, expires=100.0)
    assert _ends(core.connection_lost(1.5, "EOF")) == dict.fromkeys((1, 2, 3), Delivery.CONNECTION_DIED)
    assert core.tasks == {} and core.lost_at == 1.5
    assert core.handle_timer(3.0) == ()  # Time2Wait (2 s, as negotiated) has not passed
    assert core.handle_timer(3.5) == (LogIn(),)
    assert core.handle_timer(3.6) == ()  # one login at a time
    assert core.login_failed(4.0, LoginFailure.UNREACHABLE) == ()
    assert core.timer() == 5.0  # probed every probe_interval while the portal is down
    assert core.handle_timer(5.0) == (LogIn(),)
    assert core.logged_in(5.2, time2wait=4) == () and core.usable and core.lost_at is None
    assert core.logins == 2


def test_a_busy_target_is_backed_off_and_a_refusal_for_good_gives_up():
    core = _logged_in()
    core.connection_lost(0.0, "EOF")
    core.handle_timer(2.0)
    delays = []
    for _ in range(5):
        core.login_failed(10.0, LoginFailure.BUSY)
        delays.append(core.timer() - 10.0)
        core.handle_timer(core.timer())
    assert delays == [1, 2, 4, 8, 8]  # doubling from probe_interval up to max_backoff
    (give_up,) = core.login_refused("authorization failed")
    assert isinstance(give_up, GiveUp) and core.state is S.FAILED and core.timer() == math.inf


def test_an_async_drop_loses_the_tasks_now_and_waits_the_targets_time2wait():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    drop, end = core.async_event(AsyncAsk.DROP_SESSION, 7, now=1.0)
    assert isinstance(drop, DropConnection) and (end.initiator_task_tag, end.delivery) == (1, Delivery.CONNECTION_DIED)
    assert core.timer() == 8.0


# -- a logout the target asks for ---------------------------------------------------------------------


def test_a_logout_requested_lets_the_outstanding_commands_finish_then_logs_out_then_back_after_time2wait():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    core.command_sent(2, lun=0, now=0.0, expires=100.0)
    assert core.async_event(AsyncAsk.LOGOUT, 10, now=0.5) == (Drain(9.0),)
    assert not core.usable  # new commands wait or take another path: never sent here
    assert core.command_ended(1) == ()
    assert core.command_ended(2) == (Logout(),)  # the last one finished: none failed, none resent
    assert core.state is S.LOGGING_OUT
    assert core.logged_out(1.0, time2wait=3) == ()
    assert core.state is S.RECOVERING and core.timer() == 4.0
    assert core.handle_timer(4.0) == (LogIn(),)


def test_a_logout_requested_with_nothing_outstanding_logs_out_at_once():
    core = _logged_in()
    assert core.async_event(AsyncAsk.LOGOUT, 3, now=0.0) == (Drain(2.0), Logout())


def test_commands_that_do_not_finish_in_the_targets_time_are_ended_by_the_logout():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    core.async_event(AsyncAsk.LOGOUT, 3, now=0.0)
    assert core.handle_timer(2.0) == (Logout(),)
    assert _ends(core.logged_out(2.5, None)) == {1: Delivery.CONNECTION_DIED}
    assert core.timer() == 4.5  # the negotiated Time2Wait


def test_no_keepalive_while_draining_and_a_second_request_keeps_the_first_deadline():
    core = _logged_in()
    core.command_sent(1, lun=0, now=0.0, expires=100.0)
    core.async_event(AsyncAsk.LOGOUT, 10, now=0.0)
    assert core.async_event(AsyncAsk.LOGOUT, 60, now=1.0) == ()
    assert core.timer() == 3.0  # the command's deadline; no NOP-Out at 5
    assert core.handle_timer(3.0) == (AbortTask(1, 0),)
    assert core.handle_timer(9.0) == (Logout(), ResetLun(0))


def test_closing_during_the_logout_the_target_asked_for_is_a_decided_pair():
    core = _logged_in()
    core.async_event(AsyncAsk.LOGOUT, 3, now=0.0)
    assert core.state is S.LOGGING_OUT
    assert core.close() == ()
    assert core.logged_out(1.0, None) == () and core.connection_lost(1.0, "closed") == ()
    assert core.state is S.CLOSED and core.timer() == math.inf


def test_renegotiation_is_answered_only_on_a_connection_in_use():
    core = _logged_in()
    assert core.async_event(AsyncAsk.RENEGOTIATE, 0, now=0.0) == (Renegotiate(),)
    core.connection_lost(0.0, "EOF")
    assert core.async_event(AsyncAsk.RENEGOTIATE, 0, now=0.0) == ()
    assert core.async_event(AsyncAsk.NOTHING, 0, now=0.0) == ()


# -- a worker that dies -------------------------------------------------------------------------------


def test_a_worker_that_dies_is_a_lost_connection_for_the_commands_it_had():
    # The FUSE process re-sends each command the dead worker had to its successor, within the
    # same budget: one that has used its sends fails with EIO instead of going round again.
    fresh = Attempts("c", 0.0, POLICY)
    fresh.after(Undelivered(Delivery.CONNECTION_DIED, "session worker died"), now=1.0)  # sent again
    spent = Attempts("c", 0.0, POLICY)
    for _ in range(5):
        spent.after(Undelivered(Delivery.ABORTED, "aborted"), now=1.0)
    with pytest.raises(CommandFailed):
        spent.after(Undelivered(Delivery.CONNECTION_DIED, "session worker died"), now=2.0)


# -- the keepalive -----------------------------------------------------------------------------------


def test_a_nop_every_interval_and_the_connection_dropped_without_its_answer():
    core = SessionCore(RecoveryPolicy(nop_interval=5, nop_timeout=5), 0.0)
    core.handle_timer(0.0)
    core.logged_in(0.0, 2)
    assert core.timer() == 5.0 and core.handle_timer(5.0) == (SendNop(),)
    assert core.timer() == 10.0  # its answer's deadline
    core.nop_answered(5.1)
    assert core.timer() == 10.1 and core.handle_timer(10.1) == (SendNop(),)
    (drop,) = core.handle_timer(15.1)
    assert isinstance(drop, DropConnection) and "NOP-In" in drop.reason


def test_a_login_that_completes_after_close_is_logged_out():
    core = SessionCore(POLICY, 0.0)
    core.handle_timer(0.0)
    core.close()
    assert core.logged_in(1.0, 2) == (Logout(),)
