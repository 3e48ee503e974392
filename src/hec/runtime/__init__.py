"""Running compiled programs: encrypted (Client + Server, OpenFHE) or simulated (numpy)."""

from hec.runtime.client import Client, Decrypted
from hec.runtime.server import Server
from hec.runtime.simulator import simulate_slots

__all__ = ["Client", "Decrypted", "Server", "simulate_slots"]
