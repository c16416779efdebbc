"""The demo region: a deterministic county of townships, villages, elders, devices and aides.

The county is 安岚县, an invented mountain county modelled on 岚皋县 and 平利县 in the Qinba
mountains south of 安康市 (Shaanxi): its seat is near lat 32.68, lon 109.03; townships lie
13-25 km out; villages string along river valleys 3-12 km from their township seat; homes are
scattered along the valley within 1.5 km of the village centre. Names, numbers and places are
made up; any likeness to real people is chance.

plan.py says what a plan is, names.py holds the name material, generate.py draws a plan
(`generate_region`, pure and deterministic) and seed.py writes one into the registry
(`seed_region`, once).
"""
