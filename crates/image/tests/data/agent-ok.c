/* Test agent: proves switch_root reached /usr/sbin/zygote-agent, then powers off.
 * Build: gcc -static -O2 -o agent-ok agent-ok.c */
#include <stdio.h>
#include <sys/reboot.h>
#include <unistd.h>
#include <sys/stat.h>

int main(void) {
    struct stat st;
    printf("AGENT-OK pid=%d vda-root=%s\n", getpid(),
           stat("/usr/sbin/zygote-agent", &st) == 0 ? "yes" : "no");
    FILE *f = fopen("/proc/modules", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) printf("MODULE %s", line);
        fclose(f);
    }
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
