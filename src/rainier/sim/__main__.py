from rainier.sim.cli import sim

if __name__ == "__main__":
    sim(prog_name="rainier sim")
