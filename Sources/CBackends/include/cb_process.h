#ifndef CB_PROCESS_H
#define CB_PROCESS_H

/*
 * Process attributes Swift cannot set directly: prctl(2) is variadic. Each returns 0, or -1
 * with errno set. Used by the harness's workers and by backends' helper processes.
 */

/// prctl(PR_SET_NAME): the name `ps`, `top` and /proc/PID/comm show (at most 15 bytes kept).
int cb_set_process_name(const char *name);

/// prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills this process when its parent exits, so a
/// helper never outlives a harness that was killed. Fails with ESRCH (and sets nothing useful)
/// when the parent is already gone, as getppid() then differs from `expected_parent`.
int cb_die_with_parent(int expected_parent);

/// prctl(PR_SET_TIMERSLACK): how late the kernel may wake this thread from a timed sleep
/// (50 us by default). A paced worker sets 1 ns so its sleeps end on its schedule.
int cb_set_timer_slack(unsigned long nanoseconds);

#endif
