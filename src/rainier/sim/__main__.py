from rainier.sim.commands import sim

if __name__ == "__main__":
    sim(prog_name="rainier sim")
