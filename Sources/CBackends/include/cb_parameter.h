#ifndef CB_PARAMETER_H
#define CB_PARAMETER_H

/* A kernel parameter held at a value for one invocation and put back however it ends
 * (the harness holds free page reporting off this way). */

/// Writes `value` to the kernel parameter file `path` (a /sys or /proc file) and arranges for
/// `restore` to be written back by cb_release_parameter, at exit(), and on SIGINT, SIGTERM,
/// SIGHUP or SIGQUIT (then the signal is raised again); only by this process, not by
/// children forked later. One parameter at a time. Returns 0, or -1 with errno (EACCES when
/// not root, EINVAL when the kernel refuses the value). SIGKILL leaves `value` in place.
int cb_hold_parameter(const char *path, const char *value, const char *restore);

/// Writes back what cb_hold_parameter saved, if this process holds it. Idempotent.
void cb_release_parameter(void);

#endif
