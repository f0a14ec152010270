"""The synthetic shop's category tree and the words its products are described with.

Eight departments, two groups each, four leaf categories per group: 64 leaves. Each leaf has a
typical price, the nouns its products are called by and qualifiers that describe them, so titles
carry real category signal for a text encoder. Each department has its own brands and material
words, so text also separates departments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossrec.vocabulary import category_segments, leaf

# path | median price | nouns | qualifiers
_LEAVES = """
Outdoors > Camping > Tents | 180 | tent, dome tent, backpacking tent | 2-person, 4-person, ultralight, freestanding, three-season, waterproof
Outdoors > Camping > Sleeping Bags | 90 | sleeping bag, mummy bag, down sleeping bag | zero-degree, compressible, synthetic-fill, lightweight, hooded, packable
Outdoors > Camping > Camp Stoves | 60 | camp stove, backpacking stove, burner | two-burner, propane, canister, windproof, folding, compact
Outdoors > Camping > Headlamps | 30 | headlamp, head torch, trail light | rechargeable, 400-lumen, red-light, adjustable-beam, weatherproof, usb-c
Outdoors > Hiking > Hiking Boots | 140 | hiking boots, trail boots, trekking boots | mid-cut, gore-tex, vibram-sole, ankle-support, leather, broken-in
Outdoors > Hiking > Backpacks | 110 | backpack, daypack, trekking pack | 40-liter, ventilated, hip-belt, rain-cover, frameless, hydration-ready
Outdoors > Hiking > Trekking Poles | 45 | trekking poles, hiking poles, walking sticks | carbon, telescoping, cork-grip, shock-absorbing, collapsible, tungsten-tip
Outdoors > Hiking > Water Filters | 40 | water filter, filter bottle, purifier | squeeze, gravity, hollow-fiber, 0.1-micron, straw-style, backcountry
Electronics > Phones > Smartphones | 600 | smartphone, phone, android phone | 5g, 128gb, dual-sim, oled, triple-camera, unlocked
Electronics > Phones > Phone Cases | 20 | phone case, protective case, folio case | shockproof, clear, magsafe, silicone, wallet, slim-fit
Electronics > Phones > Chargers | 25 | charger, wall charger, charging cable | 65w, fast-charge, gan, braided, dual-port, wireless
Electronics > Phones > Screen Protectors | 12 | screen protector, tempered glass, privacy film | 9h, bubble-free, anti-glare, edge-to-edge, two-pack, oleophobic
Electronics > Audio & Computing > Headphones | 120 | headphones, earbuds, over-ear headset | noise-cancelling, wireless, hi-res, foldable, 30-hour, bluetooth
Electronics > Audio & Computing > Bluetooth Speakers | 80 | bluetooth speaker, portable speaker, soundbar | waterproof, 360-degree, bass-boost, party, stereo-pair, rugged
Electronics > Audio & Computing > Laptops | 1000 | laptop, notebook, ultrabook | 14-inch, 16gb-ram, 1tb-ssd, backlit-keyboard, thin, convertible
Electronics > Audio & Computing > Computer Mice | 35 | mouse, wireless mouse, gaming mouse | ergonomic, silent-click, 16000-dpi, vertical, ambidextrous, programmable
Kitchen > Cooking > Frying Pans | 45 | frying pan, skillet, saute pan | nonstick, cast-iron, 12-inch, induction-ready, ceramic, oven-safe
Kitchen > Cooking > Chef Knives | 60 | chef knife, santoku, kitchen knife | damascus, 8-inch, forged, high-carbon, full-tang, razor-sharp
Kitchen > Cooking > Cutting Boards | 25 | cutting board, chopping block, carving board | end-grain, bamboo, juice-groove, reversible, walnut, dishwasher-safe
Kitchen > Cooking > Dutch Ovens | 90 | dutch oven, casserole, braiser | enameled, 6-quart, self-basting, round, cast-iron, lidded
Kitchen > Coffee & Tea > Coffee Makers | 120 | coffee maker, espresso machine, drip brewer | programmable, 12-cup, thermal-carafe, 15-bar, single-serve, pour-over
Kitchen > Coffee & Tea > Coffee Beans | 15 | coffee beans, whole bean coffee, espresso roast | single-origin, dark-roast, fair-trade, arabica, medium-roast, decaf
Kitchen > Coffee & Tea > Coffee Grinders | 70 | coffee grinder, burr grinder, grinder | conical-burr, 40-setting, electric, manual, stainless, espresso-fine
Kitchen > Coffee & Tea > Tea Kettles | 40 | tea kettle, electric kettle, gooseneck kettle | temperature-control, whistling, 1.7-liter, glass, keep-warm, rapid-boil
Home > Bedroom > Mattresses | 600 | mattress, hybrid mattress, memory foam mattress | queen, medium-firm, cooling-gel, pocket-spring, 12-inch, pressure-relief
Home > Bedroom > Pillows | 35 | pillow, bed pillow, contour pillow | hypoallergenic, shredded-foam, side-sleeper, down-alternative, adjustable, two-pack
Home > Bedroom > Bed Sheets | 50 | sheet set, bed sheets, fitted sheet | 400-thread, percale, sateen, deep-pocket, organic-cotton, wrinkle-resistant
Home > Bedroom > Duvets | 90 | duvet, comforter, quilt | all-season, goose-down, baffle-box, king, lightweight, corner-tabs
Home > Living & Lighting > Sofas | 900 | sofa, sectional, loveseat | three-seat, velvet, modular, reclining, mid-century, stain-resistant
Home > Living & Lighting > Floor Lamps | 80 | floor lamp, arc lamp, torchiere | dimmable, led, tripod, reading, brass-finish, adjustable-head
Home > Living & Lighting > Rugs | 150 | area rug, runner, shag rug | 5x8, hand-tufted, washable, low-pile, moroccan, non-slip
Home > Living & Lighting > Throw Blankets | 40 | throw blanket, knit throw, fleece blanket | chunky-knit, sherpa, oversized, fringed, weighted, cozy
Fashion > Clothing > Rain Jackets | 120 | rain jacket, shell jacket, anorak | packable, seam-sealed, breathable, hooded, windproof, 2.5-layer
Fashion > Clothing > Jeans | 70 | jeans, denim, selvedge jeans | slim, straight-leg, stretch, high-rise, raw-denim, bootcut
Fashion > Clothing > T-Shirts | 20 | t-shirt, tee, crew-neck shirt | organic-cotton, heavyweight, v-neck, relaxed-fit, pocket, three-pack
Fashion > Clothing > Wool Sweaters | 80 | sweater, merino sweater, cardigan | cable-knit, crewneck, cashmere-blend, turtleneck, chunky, ribbed
Fashion > Accessories > Sneakers | 90 | sneakers, trainers, canvas shoes | low-top, leather, platform, retro, slip-on, court
Fashion > Accessories > Wristwatches | 150 | watch, wristwatch, chronograph | automatic, sapphire-crystal, 100m, minimalist, stainless, quartz
Fashion > Accessories > Sunglasses | 60 | sunglasses, shades, aviators | polarized, uv400, tortoiseshell, oversized, wayfarer, mirrored
Fashion > Accessories > Leather Belts | 35 | belt, leather belt, dress belt | full-grain, reversible, 35mm, brass-buckle, braided, ratchet
Beauty > Skincare > Face Moisturizers | 30 | moisturizer, face cream, day cream | hyaluronic, oil-free, spf-30, fragrance-free, ceramide, night
Beauty > Skincare > Sunscreens | 18 | sunscreen, sun lotion, sunblock | spf-50, mineral, reef-safe, water-resistant, tinted, broad-spectrum
Beauty > Skincare > Cleansers | 15 | cleanser, face wash, cleansing gel | foaming, gentle, salicylic, micellar, ph-balanced, exfoliating
Beauty > Skincare > Serums | 40 | serum, face serum, ampoule | vitamin-c, retinol, niacinamide, peptide, brightening, anti-aging
Beauty > Hair & Grooming > Shampoos | 12 | shampoo, clarifying shampoo, hair wash | sulfate-free, volumizing, anti-dandruff, color-safe, argan, moisturizing
Beauty > Hair & Grooming > Hair Dryers | 70 | hair dryer, blow dryer, ionic dryer | 1875w, diffuser, cool-shot, travel, ceramic, quiet
Beauty > Hair & Grooming > Electric Razors | 80 | electric razor, shaver, foil shaver | rotary, wet-dry, cordless, pop-up-trimmer, self-cleaning, 5-blade
Beauty > Hair & Grooming > Beard Oils | 20 | beard oil, beard balm, conditioning oil | sandalwood, unscented, jojoba, softening, leave-in, 30ml
Sports > Fitness > Yoga Mats | 35 | yoga mat, exercise mat, pilates mat | 6mm, non-slip, cork, alignment-lines, extra-thick, eco
Sports > Fitness > Dumbbells | 60 | dumbbells, adjustable dumbbell, kettlebell | hex, rubber-coated, 20kg, quick-select, pair, chrome
Sports > Fitness > Resistance Bands | 20 | resistance bands, loop bands, tube bands | five-level, latex-free, door-anchor, fabric, heavy, set
Sports > Fitness > Foam Rollers | 25 | foam roller, massage roller, recovery roller | high-density, textured, vibrating, 18-inch, grid, deep-tissue
Sports > Cycling & Running > Road Bikes | 1200 | road bike, gravel bike, racing bike | carbon-frame, disc-brake, 22-speed, aero, endurance, tubeless-ready
Sports > Cycling & Running > Bike Helmets | 70 | bike helmet, cycling helmet, mips helmet | vented, mips, aero, visor, lightweight, led-rear
Sports > Cycling & Running > Running Shoes | 110 | running shoes, trail runners, racing flats | cushioned, carbon-plate, stability, breathable, 8mm-drop, responsive
Sports > Cycling & Running > Fitness Trackers | 130 | fitness tracker, gps watch, activity band | heart-rate, gps, sleep-tracking, 7-day-battery, swim-proof, spo2
Pets > Dogs > Dog Food | 45 | dog food, kibble, puppy food | grain-free, salmon, high-protein, senior, small-breed, 12kg
Pets > Dogs > Dog Leashes | 20 | dog leash, lead, retractable leash | reflective, padded-handle, 6-foot, hands-free, rope, heavy-duty
Pets > Dogs > Dog Beds | 60 | dog bed, orthopedic bed, crate pad | memory-foam, bolster, washable-cover, calming, large, waterproof-liner
Pets > Dogs > Dog Toys | 12 | dog toy, chew toy, squeaky toy | indestructible, rope, treat-dispensing, plush, tug, ball
Pets > Cats > Cat Litter | 18 | cat litter, clumping litter, litter | unscented, silica, low-dust, pine, multi-cat, 10kg
Pets > Cats > Cat Trees | 90 | cat tree, cat tower, cat condo | multi-level, sisal, hammock, 150cm, wall-mounted, plush
Pets > Cats > Cat Food | 30 | cat food, wet cat food, kitten food | chicken, tuna, indoor, hairball, grain-free, pate
Pets > Cats > Scratching Posts | 35 | scratching post, scratcher, scratch pad | sisal-rope, cardboard, tall, corner, catnip, sturdy
"""

# Department-wide words: materials and styles that every product of the department may mention.
DEPARTMENT_WORDS = {
    "Outdoors": ["ripstop", "trail-tested", "all-weather", "expedition", "alpine", "durable"],
    "Electronics": [
        "smart",
        "bluetooth-5.3",
        "long-battery",
        "next-gen",
        "high-speed",
        "certified",
    ],
    "Kitchen": [
        "stainless-steel",
        "food-safe",
        "chef-grade",
        "dishwasher-safe",
        "bpa-free",
        "professional",
    ],
    "Home": ["cotton", "scandinavian", "soft-touch", "oeko-tex", "handcrafted", "modern"],
    "Fashion": ["tailored", "classic", "everyday", "premium-fabric", "unisex", "vintage-wash"],
    "Beauty": [
        "dermatologist-tested",
        "vegan",
        "cruelty-free",
        "paraben-free",
        "clinical",
        "gentle-formula",
    ],
    "Sports": [
        "sweat-wicking",
        "gym-ready",
        "performance",
        "training",
        "pro-series",
        "lightweight-build",
    ],
    "Pets": ["vet-approved", "pet-safe", "natural", "chew-resistant", "easy-clean", "breed-tested"],
}
DEPARTMENT_SENTENCES = {
    "Outdoors": "Built for long days on the trail and nights under the stars.",
    "Electronics": "Pairs in seconds and keeps up with everything you do.",
    "Kitchen": "Made for everyday cooking and easy cleanup.",
    "Home": "Brings comfort and calm to every room.",
    "Fashion": "A wardrobe staple that goes with everything.",
    "Beauty": "Suitable for daily use on all skin and hair types.",
    "Sports": "Engineered for training hard and recovering well.",
    "Pets": "Your pet will love it from day one.",
}
COLOURS = ["black", "grey", "navy", "olive", "sand", "red", "white", "blue", "green", "charcoal"]
_SYLLABLES = [
    "al",
    "bri",
    "cor",
    "dan",
    "el",
    "fen",
    "gar",
    "hal",
    "ir",
    "jun",
    "kel",
    "lor",
    "mar",
    "nor",
    "ost",
    "pel",
    "quin",
    "ros",
    "sil",
    "tor",
    "ul",
    "ven",
    "wex",
    "yor",
    "zan",
]
BRANDS_PER_DEPARTMENT = 12


@dataclass(frozen=True)
class Leaf:
    """A leaf category: ``path`` like ``"Outdoors > Camping > Tents"``."""

    path: str
    median_price: float
    nouns: tuple[str, ...]
    qualifiers: tuple[str, ...]

    @property
    def department(self) -> str:
        return category_segments(self.path)[0]

    @property
    def name(self) -> str:
        return leaf(self.path)


def leaves() -> list[Leaf]:
    out = []
    for line in _LEAVES.strip().splitlines():
        path, price, nouns, quals = (part.strip() for part in line.split("|"))
        out.append(
            Leaf(
                path,
                float(price),
                tuple(n.strip() for n in nouns.split(",")),
                tuple(q.strip() for q in quals.split(",")),
            )
        )
    return out


def departments() -> list[str]:
    return list(dict.fromkeys(leaf.department for leaf in leaves()))


def brand_names(department_index: int) -> list[str]:
    """Twelve made-up brand names per department, the same for every seed."""
    n = len(_SYLLABLES)
    # A fixed permutation of syllable pairs makes every (department, brand) name distinct.
    pairs = np.random.default_rng(20240501).permutation(n * n)
    start = department_index * BRANDS_PER_DEPARTMENT
    return [
        (_SYLLABLES[p // n] + _SYLLABLES[p % n] + "a").capitalize()
        for p in pairs[start : start + BRANDS_PER_DEPARTMENT]
    ]
