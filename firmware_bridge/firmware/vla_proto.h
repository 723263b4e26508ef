/*
 * vla-edge serial protocol v1, controller side: portable C99, no dynamic allocation.
 * Byte layout and rules: firmware_bridge/PROTOCOL.md. Hardware access is behind the vla_hal_* hooks,
 * which the microcontroller project implements (the host emulator in host_pty.c is one example).
 *
 *   vla_controller ctl;
 *   vla_init(&ctl, &limits);
 *   for each received byte: vla_rx_byte(&ctl, byte);   // replies go out through vla_hal_write()
 *   every millisecond or so: vla_tick(&ctl);           // the watchdog
 */
#ifndef VLA_PROTO_H
#define VLA_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define VLA_PROTOCOL_VERSION 1u
#define VLA_MAX_PAYLOAD 64u
#define VLA_HEADER_SIZE 5u
#define VLA_MAX_FRAME (VLA_HEADER_SIZE + VLA_MAX_PAYLOAD + 2u)
#define VLA_MAX_WIRE (VLA_MAX_FRAME + VLA_MAX_FRAME / 254u + 2u)

enum vla_msg_type {
    VLA_HELLO = 0x01, VLA_HELLO_ACK = 0x02, VLA_ACTION = 0x10, VLA_ACK = 0x11,
    VLA_HEARTBEAT = 0x20, VLA_ESTOP = 0x30, VLA_ESTOP_CLEAR = 0x31, VLA_ERROR = 0x7F
};
enum vla_ack_status { VLA_APPLIED = 0, VLA_CLAMPED = 1, VLA_DUPLICATE = 2, VLA_ESTOPPED = 3, VLA_HELD = 4 };
enum vla_error_code {
    VLA_ERR_VERSION = 1, VLA_ERR_TYPE = 2, VLA_ERR_PAYLOAD = 3, VLA_ERR_STALE = 4, VLA_ERR_NOT_CONNECTED = 5
};
#define VLA_STATE_WATCHDOG_HOLD 0x01u
#define VLA_STATE_ESTOP 0x02u

typedef struct {
    uint8_t version, type;
    uint16_t seq;
    uint8_t length;
    uint8_t payload[VLA_MAX_PAYLOAD];
} vla_frame;

typedef struct {
    int16_t dx, dy, dz;   /* hundredths of a millimetre per step */
    int16_t gripper;      /* ten-thousandths, -10000 open .. +10000 close */
    uint8_t flags;        /* bit 0: terminate */
} vla_action;

typedef struct {
    int16_t max_step;          /* per axis, hundredths of a millimetre */
    uint16_t control_period_ms;
    uint16_t watchdog_ms;
    uint8_t action_dims;
} vla_limits;

typedef struct {
    vla_limits limits;
    uint8_t connected, estop, watchdog_hold, have_last;
    uint16_t last_seq;
    uint8_t last_status;
    vla_action last_applied;
    uint8_t last_had_action;
    uint32_t last_fed_ms;
    /* receive state */
    uint8_t rx[VLA_MAX_WIRE];
    size_t rx_len;
    uint8_t rx_discarding;
    uint32_t rejected, applied, duplicates;
} vla_controller;

/* Hooks the firmware project implements. */
uint32_t vla_hal_now_ms(void);
void vla_hal_write(const uint8_t *data, size_t len);
void vla_hal_apply(const vla_action *action);
void vla_hal_hold(void);
void vla_hal_state(int32_t hand_um[3], int16_t *gripper);

/* Building blocks (also used by the tests). */
uint16_t vla_crc16(const uint8_t *data, size_t len);
size_t vla_cobs_encode(const uint8_t *in, size_t len, uint8_t *out);
/* Returns the decoded length, or 0 when `in` is not valid COBS. */
size_t vla_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);
/* Parses the bytes between two delimiters; returns 0 on success, -1 for anything invalid. */
int vla_parse(const uint8_t *encoded, size_t len, vla_frame *frame);
/* Protocol-level checks (version, known type, payload size); returns 0 or an vla_error_code. */
int vla_validate(const vla_frame *frame);
size_t vla_build(uint8_t type, uint16_t seq, const uint8_t *payload, uint8_t length, uint8_t *wire);

void vla_init(vla_controller *ctl, const vla_limits *limits);
void vla_rx_byte(vla_controller *ctl, uint8_t byte);
void vla_handle(vla_controller *ctl, const vla_frame *frame);
void vla_tick(vla_controller *ctl);

#endif
