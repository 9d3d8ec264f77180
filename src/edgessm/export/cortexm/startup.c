/* Start-up code of the edgessm Cortex-M test application (bare metal, semihosting).
 *
 * The vector table (initial stack pointer, reset and fault handlers), the copy of .data from
 * flash to RAM, the zeroing of .bss, the semihosting stdio set-up of newlib's rdimon library,
 * then exit(main()). The symbols come from the linker script (cortexm.ld).
 *
 * edgessm_mark_begin / edgessm_mark_end are empty functions the harness calls around the
 * steps it wants counted: an execution trace of the emulator counts the instructions executed
 * between them. They live in this file so that the compiler cannot inline them away. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];
extern int main(void);
extern void initialise_monitor_handles(void);
extern void _exit(int status);

void edgessm_reset(void);
void edgessm_fault(void);
void edgessm_mark_begin(void);
void edgessm_mark_end(void);

/* 16 system vectors: stack, reset, NMI, HardFault, MemManage, BusFault, UsageFault, 4 reserved,
 * SVCall, DebugMonitor, reserved, PendSV, SysTick. No device interrupt is enabled. */
__attribute__((section(".isr_vector"), used))
const uintptr_t edgessm_vectors[16] = {
    (uintptr_t)_estack, (uintptr_t)edgessm_reset, (uintptr_t)edgessm_fault, (uintptr_t)edgessm_fault,
    (uintptr_t)edgessm_fault, (uintptr_t)edgessm_fault, (uintptr_t)edgessm_fault, 0, 0, 0, 0,
    (uintptr_t)edgessm_fault, (uintptr_t)edgessm_fault, 0, (uintptr_t)edgessm_fault,
    (uintptr_t)edgessm_fault};

void edgessm_reset(void)
{
    uint32_t *src = _sidata, *dst = _sdata;
    while (dst < _edata)
        *dst++ = *src++;
    for (dst = _sbss; dst < _ebss; ++dst)
        *dst = 0;
    initialise_monitor_handles();
    exit(main());
}

/* Any fault ends the emulation with a failure status (the host reports it). */
void edgessm_fault(void)
{
    _exit(70);
}

/* newlib's exit() runs the finalizers between _init and _fini (crti/crtn are not linked). */
void _init(void);
void _fini(void);

void _init(void)
{
}

void _fini(void)
{
}

void edgessm_mark_begin(void)
{
    __asm__ volatile("" ::: "memory");
}

void edgessm_mark_end(void)
{
    __asm__ volatile("" ::: "memory");
}
