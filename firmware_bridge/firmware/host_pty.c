/*
 * The reference firmware running on a host: the controller on the master end of a new pseudo-terminal,
 * with a kinematic point arm. Prints the host-side path, then serves until killed.
 *   cc -std=c99 -O2 -o vla_controller host_pty.c vla_proto.c && ./vla_controller
 * Hardware hooks (vla_hal_*) are implemented here with POSIX calls; a microcontroller project replaces
 * this file and keeps vla_proto.c/.h as they are.
 */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "vla_proto.h"

static int master_fd = -1;
static int32_t hand_um[3] = {0, 600000, 200000};
static int16_t gripper_open = 10000;

uint32_t vla_hal_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)(ts.tv_sec * 1000u + ts.tv_nsec / 1000000u);
}

void vla_hal_write(const uint8_t *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(master_fd, data, len);
        if (n <= 0) return;
        data += n;
        len -= (size_t)n;
    }
}

void vla_hal_apply(const vla_action *a) {
    hand_um[0] += a->dx * 10; /* hundredths of a millimetre -> micrometres */
    hand_um[1] += a->dy * 10;
    hand_um[2] += a->dz * 10;
    int g = gripper_open - a->gripper / 5;
    gripper_open = (int16_t)(g < 0 ? 0 : (g > 10000 ? 10000 : g));
}

void vla_hal_hold(void) {}

void vla_hal_state(int32_t out[3], int16_t *gripper) {
    out[0] = hand_um[0];
    out[1] = hand_um[1];
    out[2] = hand_um[2];
    *gripper = gripper_open;
}

int main(void) {
    master_fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (master_fd < 0 || grantpt(master_fd) != 0 || unlockpt(master_fd) != 0) {
        perror("posix_openpt");
        return 1;
    }
    struct termios tio;
    tcgetattr(master_fd, &tio);
    cfmakeraw(&tio);
    tcsetattr(master_fd, TCSANOW, &tio);
    printf("%s\n", ptsname(master_fd));
    fflush(stdout);
    vla_limits limits = {1000, 50, 200, 5}; /* 10 mm per step, 50 ms period, 200 ms watchdog, 5 dims */
    static vla_controller ctl;
    vla_init(&ctl, &limits);
    struct pollfd pfd = {master_fd, POLLIN, 0};
    uint8_t buf[256];
    for (;;) {
        int ready = poll(&pfd, 1, 1);
        vla_tick(&ctl);
        if (ready <= 0 || !(pfd.revents & POLLIN)) continue;
        ssize_t n = read(master_fd, buf, sizeof buf);
        for (ssize_t i = 0; i < n; i++) vla_rx_byte(&ctl, buf[i]);
    }
}
