"""C99 generated from the integer network: the code of ``edgessm export-c`` (``export/c.py``,
portable, for microcontrollers) and of the integer engine's compiled backend (``cengine.py``).

    code = generate(net, "smnist")                 # {"h": ..., "c": ..., "data_bytes": ...}

The C code executes exactly the per-token arithmetic of the integer engine
(``targets/fixed/engine.py``, documented in ``quant/intnet.py``): the same int64
products and sums, the same round-half-up shifts (``s <= 0``: exact left shifts), the
same saturation or wrap-around per tensor kind, with the overflows counted per kind in
the state struct (``overflow_input``, ``overflow_accumulator``, ``overflow_activations``,
``overflow_state``, as ``Engine.overflows``). Graded spikes are sent densely: the C step
is the engine with its default messaging (``sigma_delta_threshold = -1``; ``T = 0`` gives
the same outputs).

What is generated, per model ``<name>``:

* ``<name>.h``: sizes and exponents as ``#define`` (``<NAME>_D_INPUT``, ``<NAME>_D_OUTPUT``,
  ``<NAME>_INPUT_EXP``, ``<NAME>_INPUT_BITS``, ``<NAME>_OUTPUT_EXP``, ...), the state struct
  ``<name>_state`` (fixed-size arrays, no pointers), ``<name>_init``, ``<name>_step`` and
  ``<name>_argmax``; float helpers for the host (``<name>_encode``, ``<name>_decode``) only
  when ``<NAME>_FLOAT_HELPERS`` or ``EDGESSM_FLOAT_HELPERS`` is defined.
* ``<name>.c``: every tensor as a ``static const`` array of the narrowest ``<stdint.h>`` type
  that holds it (a tensor whose entries are all equal becomes a literal), one static
  function per layer, no ``malloc``, no float in the integer step, ``int64_t``
  arithmetic, or ``int32_t`` where the value ranges prove it exact (the range-specialized
  layer code of ``ranges.py``: a round-half-up shift by a positive constant is then an offset, an
  unsigned shift and a subtraction). Right shifts of negative numbers use a floor shift that
  C99 defines (``~(~x >> s)``, the exact-width types being two's complement), or shift an
  unsigned value; a left shift is a multiplication, so nothing depends on
  implementation-defined or undefined behaviour.

The code compiles with ``cc -std=c99 -Wall -Wextra -pedantic -Werror -O2`` (:data:`CFLAGS`).
``verify.verify_c`` compiles it with the harness ``targets/fixed/harness.c``, runs test
sequences through it and compares every token's integer logits (and the overflow counters)
with the Python engine, and times the C step on this CPU.

The same generator builds the integer engine's C backend (``targets/fixed/cengine.py``):
``generate(net, name, engine_pops=engine.pops)`` keeps the layer functions, counts overflows
per tensor (``uint64_t engine_overflow[]`` in the state) and appends ``<name>_engine_run``,
which runs a batch of sequences with the engine's message, synop and sigma-delta
bookkeeping; ``cengine.load_engine`` compiles it into a cached shared library.

The modules, one job each: ``names.py`` (C identifiers), ``emit.py`` (flags, literals, const
arrays), ``layers.py`` (the general layer code), ``ranges.py`` (the range-specialized layer
code), ``backend.py`` (the engine's batched entry point), ``network.py`` (the two files).
"""
from .emit import CFLAGS, MAX_SHIFT, OVERFLOW_KINDS, TARGET
from .names import C_KEYWORDS, c_identifier, check_name
from .network import check_net, generate, state_bytes

__all__ = ["CFLAGS", "C_KEYWORDS", "MAX_SHIFT", "OVERFLOW_KINDS", "TARGET", "c_identifier", "check_name",
           "check_net", "generate", "state_bytes"]
