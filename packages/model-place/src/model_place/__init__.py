"""model_place: tensor addresses for known lifetimes, with heuristics, an exact
search and proven lower bounds."""

from model_place.caching_allocator import (CachingAllocatorResult, Segment, simulate_caching_allocator,
                                          simulate_training_steps)
from model_place.csv_format import parse_lifetimes_csv, read_lifetimes_csv, write_placement_csv
from model_place.errors import LifetimeError, PlaceError, PlacementError, SearchUnavailableError
from model_place.exact import exact_placement
from model_place.heuristics import best_fit, greedy_by_size, no_reuse
from model_place.lifetimes import check_lifetimes, lifetimes_from_graph, live_bytes_peak
from model_place.placers import place, placer_names
from model_place.result import PlacementResult
from model_place.validation import validate_placement

__version__ = "0.1.0"

__all__ = [
    "CachingAllocatorResult", "LifetimeError", "PlaceError", "PlacementError", "PlacementResult",
    "SearchUnavailableError", "Segment", "best_fit", "check_lifetimes", "exact_placement", "greedy_by_size",
    "lifetimes_from_graph", "live_bytes_peak", "no_reuse", "parse_lifetimes_csv", "place", "placer_names",
    "read_lifetimes_csv", "simulate_caching_allocator", "simulate_training_steps", "validate_placement",
    "write_placement_csv",
]
