/*
 * Test driver: reads lines "name hex" (a wire frame, delimiter included) from stdin and prints
 * "name type seq payloadhex" for each frame the C decoder accepts and validates, "name REJECT" otherwise.
 * With -b (build), prints the C encoder's wire bytes for each decoded frame instead, to compare byte-exact.
 */
#include <stdio.h>
#include <string.h>

#include "vla_proto.h"

uint32_t vla_hal_now_ms(void) { return 0; }
void vla_hal_write(const uint8_t *data, size_t len) { (void)data; (void)len; }
void vla_hal_apply(const vla_action *action) { (void)action; }
void vla_hal_hold(void) {}
void vla_hal_state(int32_t hand_um[3], int16_t *gripper) { hand_um[0] = hand_um[1] = hand_um[2] = 0; *gripper = 0; }

static int unhex(const char *hex, uint8_t *out, size_t cap) {
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > cap) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return (int)(n / 2);
}

int main(int argc, char **argv) {
    int build = argc > 1 && strcmp(argv[1], "-b") == 0;
    char name[128], hex[4096];
    uint8_t wire[2048];
    unsigned long accepted = 0, total = 0;
    while (scanf("%127s %4095s", name, hex) == 2) {
        int n = unhex(hex, wire, sizeof wire);
        total++;
        vla_frame frame;
        /* strip the trailing delimiter if present */
        size_t len = (n > 0 && wire[n - 1] == 0) ? (size_t)n - 1 : (size_t)(n < 0 ? 0 : n);
        if (n <= 0 || memchr(wire, 0, len) || vla_parse(wire, len, &frame) != 0 || vla_validate(&frame) != 0) {
            printf("%s REJECT\n", name);
            continue;
        }
        accepted++;
        if (build) {
            uint8_t out[VLA_MAX_WIRE];
            size_t m = vla_build(frame.type, frame.seq, frame.payload, frame.length, out);
            printf("%s ", name);
            for (size_t i = 0; i < m; i++) printf("%02x", out[i]);
            printf("\n");
        } else {
            printf("%s %u %u ", name, frame.type, frame.seq);
            for (unsigned i = 0; i < frame.length; i++) printf("%02x", frame.payload[i]);
            printf("\n");
        }
    }
    fprintf(stderr, "accepted %lu of %lu\n", accepted, total);
    return 0;
}
