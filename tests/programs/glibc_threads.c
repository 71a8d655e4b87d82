/* A threaded glibc program that needs glibc's two reserved signals: 33 (SIGSETXID) for a
 * setuid(2) that every thread must follow, 32 (SIGCANCEL) for pthread_cancel(3). It prints
 * its SigIgn and SigCgt masks (from /proc/self/status) at start and after using both, then
 * exits 0 if setuid succeeded. pyinit's posix_spawn starts it with both ignored (spawn.py);
 * glibc installs its handlers when it first needs them, which replaces the SIG_IGN. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void *wait_to_be_cancelled(void *unused) {
    for (;;)
        pause();
    return unused;
}

static void show_masks(const char *when) {
    char line[256];
    FILE *status = fopen("/proc/self/status", "r");
    while (status && fgets(line, sizeof line, status))
        if (!strncmp(line, "SigIgn:", 7) || !strncmp(line, "SigCgt:", 7))
            printf("%s %s", when, line);
    if (status)
        fclose(status);
}

int main(void) {
    pthread_t thread;
    show_masks("start");
    if (pthread_create(&thread, NULL, wait_to_be_cancelled, NULL) != 0)
        return 2;
    int refused = setuid(getuid()); /* with a second thread: glibc signals it with SIGSETXID */
    pthread_cancel(thread);          /* SIGCANCEL */
    pthread_join(thread, NULL);
    show_masks("after");
    fflush(stdout);
    return refused ? 3 : 0;
}
