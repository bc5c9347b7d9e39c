#!/usr/bin/env python3
"""Writes a realistic contacts CSV for the import benchmark: fixed seed, 8 columns
(email, first_name, last_name, company, city, plan, seats, signed_up), some quoted
fields (commas, quotes, a few embedded newlines), and 1% bad rows (invalid email).

usage: gen_import_csv.py ROWS OUT.csv
"""
import random
import sys

FIRST = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lea",
         "Mo", "Nia", "Oli", "Pia", "Quinn", "Rui", "Sol", "Tao", "Uma", "Vic", "Wen", "Yara"]
LAST = ["García", "Smith", "O'Neil", "Müller", "Nguyen", "Rossi", "Kowalski", "Dubois",
        "Silva", "Johansson", "Yılmaz", "Kim", "Novak", "Haddad", "Okafor", "Tanaka"]
COMPANIES = ["Acme", "Globex, Inc.", "Initech", "Umbrella \"Labs\"", "Hooli", "Vandelay",
             "Stark Industries", "Wayne, Enterprises", "Soylent", "Tyrell"]
CITIES = ["Madrid", "Berlin", "Lagos", "São Paulo", "Tokyo", "Austin", "Kraków", "Lyon"]
PLANS = ["free", "pro", "team", "enterprise"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example"]


def field(v):
    if any(c in v for c in ',"\n'):
        return '"' + v.replace('"', '""') + '"'
    return v


def main():
    rows, out = int(sys.argv[1]), sys.argv[2]
    rnd = random.Random(20261125)
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("email,first_name,last_name,company,city,plan,seats,signed_up\n")
        for i in range(rows):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            if rnd.random() < 0.01:
                email = f"{first.lower()}.{i}-at-nowhere"  # 1% bad rows
            else:
                email = f"{first.lower()}.{i}@{rnd.choice(DOMAINS)}"
            company = rnd.choice(COMPANIES)
            if rnd.random() < 0.002:
                company += "\nBuilding 2"
            f.write(",".join([
                email, first, field(last), field(company), rnd.choice(CITIES),
                rnd.choice(PLANS), str(rnd.randint(1, 500)),
                f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            ]) + "\n")


if __name__ == "__main__":
    main()
