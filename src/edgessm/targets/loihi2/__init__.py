"""``loihi2``: Intel Loihi 2 as a target. The integer engine (``targets/fixed``) executes the
quantized network bit-exactly; this folder adds the mapping onto neuro cores and the cost
model whose every constant is in :mod:`.constants` with its source."""
from .constants import CALIBRATION_POINT, CONSTANTS, SECOND_POINT, table_markdown
from .network import DenseLayer, DescribedNetwork, cost_network, dense_chain, from_counts
from .program import Loihi2Config, Loihi2Program, Loihi2Target, check_spec_fits, unmappable_layers

__all__ = ["CONSTANTS", "CALIBRATION_POINT", "SECOND_POINT", "table_markdown", "Loihi2Config",
           "Loihi2Program", "Loihi2Target", "unmappable_layers", "check_spec_fits", "DenseLayer",
           "DescribedNetwork", "dense_chain", "from_counts", "cost_network"]
