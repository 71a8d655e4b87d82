/* A process whose main thread calls pthread_exit() while a second thread serves on.
 *
 * The second thread waits for SIGTERM (blocked in every thread, taken with
 * sigwait), prints "term", takes STOP_SECONDS to stop, and exits the whole
 * process with 0. The main thread prints "ready" once that thread waits,
 * then leaves with pthread_exit(): /proc shows the leader as a zombie, but
 * the process has not exited until the other thread ends it.
 *
 * usage: leader_exits STOP_SECONDS
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double stop_seconds;
static sigset_t term;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t waiting = PTHREAD_COND_INITIALIZER;
static int started;

static void *serve(void *unused)
{
    int signo;

    (void)unused;
    pthread_mutex_lock(&lock);
    started = 1;
    pthread_cond_signal(&waiting);
    pthread_mutex_unlock(&lock);
    sigwait(&term, &signo);
    printf("term\n");
    fflush(stdout);
    struct timespec pause = {(time_t)stop_seconds, (long)((stop_seconds - (time_t)stop_seconds) * 1e9)};
    nanosleep(&pause, NULL);
    exit(0);
}

int main(int argc, char **argv)
{
    pthread_t server;

    if (argc != 2)
        return 2;
    stop_seconds = atof(argv[1]);
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    if (pthread_create(&server, NULL, serve, NULL) != 0)
        return 3;
    pthread_mutex_lock(&lock);
    while (!started)
        pthread_cond_wait(&waiting, &lock);
    pthread_mutex_unlock(&lock);
    printf("ready\n");
    fflush(stdout);
    pthread_exit(NULL);
}
